import functools

import numpy as np

from pipelines.evaluate.ray_search import Shard, ray_sharded_search
from sare_core.evaluation import knn_search


def _rows(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_ray_shards_merge_to_the_single_flat_index(ray_local):
    db = np.concatenate([_rows(1, 500, 32), _rows(2, 333, 32), _rows(3, 1, 32), _rows(4, 700, 32)])
    q = _rows(9, 40, 32)
    # Shards load their own rows inside the actor (here: regenerated from a seed, like reading a store part).
    offsets = np.cumsum([0, 500, 333, 1])
    shards = [Shard(functools.partial(_rows, s, n, 32), int(o)) for s, n, o in zip((1, 2, 3, 4), (500, 333, 1, 700), offsets)]
    merged = ray_sharded_search(q, shards, k=25)
    flat = knn_search(q, db, k=25, mode="flat")
    np.testing.assert_array_equal(merged.indices, flat.indices)
    np.testing.assert_allclose(merged.distances, flat.distances, rtol=1e-5)
    assert merged.mode == "ray"
