"""What a model gets besides gradient steps, each fitted on a seeded sample of database images: the
initial model (NetVLAD centroids by k-means over local descriptors) and PCA whitening.

Used wherever a model is prepared: `sare train` (initial model, whitening after the best epoch), the sweep's
finalisation, `sare eval --manifest` for off-the-shelf models, the demo and the benchmarks. The same seed
draws the same images, so an off-the-shelf model fitted by `sare eval --manifest` on a run's training split
with the run's settings is that run's initial model (same model hash).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..models.centroids import init_netvlad_centroids
from ..models.config import ModelConfig
from ..models.embedding import EmbeddingModel, build_model
from ..models.images import load_rgb
from ..models.inference import embed_paths
from ..models.netvlad import NetVLAD
from ..whitening import fit_pca_whitening

log = logging.getLogger(__name__)


def centroid_rows(num_images: int, wanted: int, seed: int) -> np.ndarray:
    """The image rows k-means samples: `wanted` of `num_images` without replacement, in draw order."""
    return np.random.default_rng(seed).choice(num_images, size=min(wanted, num_images), replace=False)


def whitening_rows(num_images: int, wanted: int | None, seed: int) -> np.ndarray:
    """The image rows PCA whitening is fitted on: all of them, or a sorted sample of `wanted`."""
    if not wanted or num_images <= wanted:
        return np.arange(num_images)
    return np.sort(np.random.default_rng(seed).choice(num_images, wanted, replace=False))


def _image_batches(model: EmbeddingModel, paths: Sequence[str], batch_size: int) -> Iterator[torch.Tensor]:
    prep = model.preprocessor
    for start in range(0, len(paths), batch_size):
        yield prep.normalize_uint8(np.stack([prep.to_uint8(load_rgb(p)) for p in paths[start : start + batch_size]]))


def initial_model(config: ModelConfig, db_paths: Sequence[str], centroid_images: int = 500,
                  per_image: int = 100, seed: int = 0, batch_size: int = 32) -> tuple[EmbeddingModel, dict]:
    """The off-the-shelf model of `config` (random layers drawn with torch seeded by `seed`) with NetVLAD
    centroids by k-means over `per_image` local descriptors of each of `centroid_images` database images.

    Returns the model (eval mode) and a record of the fit ({} for GeM pooling).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config).eval()
    record: dict = {}
    if isinstance(model.pool, NetVLAD):
        rows = centroid_rows(len(db_paths), centroid_images, seed)
        started = time.perf_counter()
        init_netvlad_centroids(model, _image_batches(model, [db_paths[i] for i in rows], batch_size),
                               per_image=per_image, seed=seed)
        record = {"kmeans": {"images": len(rows), "per_image": per_image, "clusters": model.pool.num_clusters,
                             "seed": seed, "seconds": time.perf_counter() - started}}
        log.info("k-means centroids from %d images in %.1f s", len(rows), record["kmeans"]["seconds"])
    return model, record


def fit_whitening(model: EmbeddingModel, db_paths: Sequence[str], dim: int | None, images: int | None = None,
                  seed: int = 0, batch_size: int = 32, device: str | torch.device = "cpu") -> dict:
    """Fit PCA whitening to `dim` output dimensions on the descriptors of `images` database images (None:
    all), replacing any whitening the model had; `dim` None removes it. The dimension is capped by the
    sample's rank (N - 1), with a warning. Returns a record of the fit ({} without whitening)."""
    model.set_whitening(None)
    if dim is None:
        return {}
    rows = whitening_rows(len(db_paths), images, seed)
    started = time.perf_counter()
    desc = embed_paths(model, [db_paths[i] for i in rows], batch_size=batch_size, device=device)
    usable = min(dim, len(desc) - 1, desc.shape[1])
    if usable < dim:
        log.warning("whitening: %d dims requested, %d possible from %d images of %d dims; using %d", dim,
                    min(len(desc) - 1, desc.shape[1]), len(desc), desc.shape[1], usable)
    model.set_whitening(fit_pca_whitening(desc, usable).to(device))
    log.info("PCA whitening %d -> %d dims from %d database images", desc.shape[1], usable, len(desc))
    return {"whitening": {"images": len(rows), "dims": usable, "seed": seed,
                          "seconds": time.perf_counter() - started}}
