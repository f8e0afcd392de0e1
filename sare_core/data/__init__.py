"""Datasets and ground truth: every input format becomes a PlaceDataset."""

from .aligned import load_aligned_traverses
from .dbstruct import load_dbstruct, save_dbstruct
from .gldv2 import load_gldv2_retrieval, load_gldv2_train
from .ground_truth import count_positives, negatives_beyond, positives_same_label, positives_within
from .gsv import load_gsv_folders
from .image_check import ImageCheckReport, check_images
from .manifest import read_manifest, read_manifest_splits, write_manifest
from .place_dataset import PlaceDataset
from .sources import open_splits
from .training_queries import trainable_queries, training_negatives, training_positives

__all__ = [
    "PlaceDataset",
    "load_dbstruct",
    "save_dbstruct",
    "count_positives",
    "negatives_beyond",
    "positives_same_label",
    "positives_within",
    "load_gsv_folders",
    "load_aligned_traverses",
    "load_gldv2_train",
    "load_gldv2_retrieval",
    "read_manifest",
    "read_manifest_splits",
    "write_manifest",
    "check_images",
    "ImageCheckReport",
    "open_splits",
    "training_positives",
    "training_negatives",
    "trainable_queries",
]
