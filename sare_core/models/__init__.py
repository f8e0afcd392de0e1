"""Models: backbones, NetVLAD / GeM pooling, the embedding model, preprocessing, centroids, save/load.

The names below load on first use, so importing a torch-free submodule (`specs`, `config`, `images`) does
not import torch: extraction's decode tasks and the command line stay light.
"""

from __future__ import annotations

from ..lazy import lazy_attributes

_SUBMODULE = {
    "BACKBONES": "specs",
    "ModelConfig": "config",
    "load_rgb": "images",
    "FeatureExtractor": "backbones",
    "build_backbone": "backbones",
    "init_netvlad_centroids": "centroids",
    "kmeans_centroids": "centroids",
    "sample_local_descriptors": "centroids",
    "EmbeddingModel": "embedding",
    "build_model": "embedding",
    "GeM": "gem",
    "embed_paths": "inference",
    "load_model": "io",
    "model_hash": "io",
    "save_model": "io",
    "NetVLAD": "netvlad",
    "netvlad_alpha": "netvlad",
    "NORMALIZATION": "preprocessing",
    "Preprocessor": "preprocessing",
}

__all__ = sorted(_SUBMODULE)


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _SUBMODULE)
