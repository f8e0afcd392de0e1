"""Training through the frozen-feature cache is training without it: the same tuples give the same batches
(as maps), and a run's losses and validation recalls match a run that runs every layer every time."""

import numpy as np
import pytest
import torch

from sare_core.data import open_splits
from sare_core.models import ModelConfig, build_model
from sare_core.models.frozen_cache import FrozenFeatureCache
from sare_core.training.checkpoint import TrainingState
from sare_core.training.config import TrainConfig
from sare_core.training.loop import run_epochs
from sare_core.training.tuples import TupleImages

MODEL = {"backbone": "tiny", "num_clusters": 8, "whitening_dim": None, "image_size": [72, 96], "train_from": "conv3"}


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(**MODEL))


@pytest.mark.parametrize("jitter", [0.0, 0.3])
def test_tuple_maps_run_to_the_descriptors_of_tuple_pixels(tiny_city, jitter):
    train = open_splits(str(tiny_city / "manifest.parquet"))["train"]
    model = tiny_model().eval()
    cache = FrozenFeatureCache(model.backbone.frozen, 2**30)
    rows = (np.array([0, 1]), np.array([3, 4]), np.array([[5, 6, 7], [8, 9, 5]]))
    pixels = TupleImages(train, model.preprocessor, jitter, seed=7)(*rows)
    timings = {}
    maps = TupleImages(train, model.preprocessor, jitter, seed=7, cache=cache)(*rows, timings)
    with torch.no_grad():
        np.testing.assert_allclose(model(maps, from_frozen=True).numpy(), model(pixels).numpy(), atol=1e-5)
    assert timings["frozen_forward"] > 0
    # Jittered queries never enter the cache; the database images do, once each.
    assert len(cache) == (7 if jitter else 9)
    assert all(train.q_paths[q] not in cache for q in rows[0]) == bool(jitter)


def test_a_run_through_the_cache_trains_as_a_run_without_it(tiny_city):
    splits = open_splits(str(tiny_city / "manifest.parquet"))
    histories, stats = [], []
    for cache_mb in (0, 64):
        config = TrainConfig(dataset=str(tiny_city / "manifest.parquet"), model=MODEL, epochs=2, chunk_size=24,
                             max_train_queries=24, negative_pool=40, num_negatives=3, batch_size=4, lr=1e-2,
                             val_ns=[1, 5], select_n=1, frozen_cache_mb=cache_mb)
        rows = []
        run_epochs(TrainingState.start(tiny_model(), config), config, splits["train"], splits["val"],
                   lambda row, _state, rows=rows: rows.append(row))
        histories.append(rows)
        stats.append({k: v for k, v in rows[-1].items() if k.startswith("frozen_cache_")})
    plain, cached = histories
    assert [r["epoch"] for r in cached] == [0, 1, 2] and cached[1]["tuples"] > 0
    for a, b in zip(plain, cached):
        for key in [k for k in ("loss", "val_recall@1", "val_recall@5", "tuples") if k in a]:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-3, atol=1e-4, err_msg=f"epoch {a['epoch']} {key}")
    assert stats[0] == {} and stats[1]["frozen_cache_images"] > 0 and stats[1]["frozen_cache_hits"] > 0
    # Epoch 1's steps train on images its re-mining just embedded; epoch 2 re-mines images seen in epoch 1.
    assert plain[1]["trained_cached_images"] == plain[1]["mined_cached_images"] == 0
    assert 0 < cached[1]["trained_cached_images"] <= cached[1]["trained_images"]
    assert 0 < cached[2]["mined_cached_images"] <= cached[2]["mined_images"]
