"""Models: backbones, NetVLAD / GeM pooling, the embedding model, preprocessing, centroids, save/load."""

from .backbones import BACKBONES, FeatureExtractor, build_backbone
from .centroids import init_netvlad_centroids, kmeans_centroids, sample_local_descriptors
from .config import ModelConfig
from .embedding import EmbeddingModel, build_model
from .gem import GeM
from .inference import embed_paths
from .io import load_model, model_hash, save_model
from .netvlad import NetVLAD, netvlad_alpha
from .preprocessing import NORMALIZATION, Preprocessor, load_rgb

__all__ = [
    "BACKBONES",
    "NORMALIZATION",
    "EmbeddingModel",
    "FeatureExtractor",
    "GeM",
    "ModelConfig",
    "NetVLAD",
    "Preprocessor",
    "build_backbone",
    "build_model",
    "embed_paths",
    "init_netvlad_centroids",
    "kmeans_centroids",
    "load_model",
    "load_rgb",
    "model_hash",
    "netvlad_alpha",
    "sample_local_descriptors",
    "save_model",
]
