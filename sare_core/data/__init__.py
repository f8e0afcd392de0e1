"""Datasets and ground truth: every input format becomes a PlaceDataset.

Modules: place_dataset (PlaceDataset), readers (dbstruct: Pitts/Tokyo .mat; gsv: @utm@ folders; aligned:
sequence traverses such as Nordland; gldv2: Google Landmarks v2 CSVs; manifest: CSV/Parquet manifests),
sources (open_splits: any of them by path), ground_truth (positives within a radius / same label),
image_rows (one row per image with a stable id, what extraction and stores use), image_check, summary
(`sare data inspect`), sequence_splits, training_queries, names, synth (the synthetic city).

The names below load their module on first use, so `import sare_core.data.names` stays free.
"""

from __future__ import annotations

from ..lazy import lazy_attributes

_SUBMODULE = {
    "PlaceDataset": "place_dataset",
    "load_dbstruct": "dbstruct",
    "save_dbstruct": "dbstruct",
    "count_positives": "ground_truth",
    "negatives_beyond": "ground_truth",
    "positives_same_label": "ground_truth",
    "positives_within": "ground_truth",
    "load_gsv_folders": "gsv",
    "load_aligned_traverses": "aligned",
    "load_gldv2_train": "gldv2",
    "load_gldv2_retrieval": "gldv2",
    "read_manifest": "manifest",
    "read_manifest_splits": "manifest",
    "write_manifest": "manifest",
    "check_images": "image_check",
    "ImageCheckReport": "image_check",
    "open_splits": "sources",
    "training_positives": "training_queries",
    "training_negatives": "training_queries",
    "trainable_queries": "training_queries",
}

__all__ = sorted(_SUBMODULE)


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _SUBMODULE)
