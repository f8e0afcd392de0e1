"""Datasets and ground truth: every input format becomes a PlaceDataset."""

from .ground_truth import count_positives, negatives_beyond, positives_same_label, positives_within
from .dbstruct import load_dbstruct, save_dbstruct
from .place_dataset import PlaceDataset

__all__ = [
    "PlaceDataset",
    "load_dbstruct",
    "save_dbstruct",
    "count_positives",
    "negatives_beyond",
    "positives_same_label",
    "positives_within",
]
