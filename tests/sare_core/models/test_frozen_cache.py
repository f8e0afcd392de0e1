"""The frozen-feature cache: descriptors through it equal the whole model's, cached images are not decoded
again, the budget bounds what it keeps, and it refuses a model it does not belong to."""

import shutil

import numpy as np
import pytest
import torch

from sare_core.models import ModelConfig, build_model
from sare_core.models.frozen_cache import FrozenFeatureCache
from sare_core.models.images import load_rgb
from sare_core.models.inference import embed_paths


def tiny_model(train_from="conv3", seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(backbone="tiny", num_clusters=8, whitening_dim=None, image_size=(48, 64),
                                   train_from=train_from))


def test_cached_descriptors_equal_the_whole_models_and_need_no_decoding(toy_street_images, tmp_path):
    model = tiny_model()
    paths = []
    for p in toy_street_images[:12]:  # copies: deleted below to prove the second pass decodes nothing
        shutil.copy(p, tmp_path / p.name)
        paths.append(str(tmp_path / p.name))
    want = embed_paths(model, paths, batch_size=5)
    cache = FrozenFeatureCache(model.backbone.frozen, 2**30)
    timings = {}
    first = embed_paths(model, paths, batch_size=5, cache=cache, timings=timings)
    np.testing.assert_allclose(first, want, atol=1e-5)
    assert cache.stats() == {"images": 12, "bytes": cache.bytes, "hits": 0, "misses": 12, "adopted": 0}
    assert cache.bytes > 0
    assert timings["forward"] > 0
    for p in paths:
        (tmp_path / p.rsplit("/", 1)[1]).unlink()
    again = embed_paths(model, paths[::-1], batch_size=4, cache=cache)
    np.testing.assert_allclose(again, want[::-1], atol=1e-5)
    assert cache.hits == 12 and cache.misses == 12


def test_the_budget_bounds_what_is_kept_and_the_rest_is_computed_each_time(toy_street_images):
    model = tiny_model()
    paths = [str(p) for p in toy_street_images[:10]]
    one_map = model.backbone.frozen(model.preprocessor(load_rgb(paths[0]))[None]).numel() * 4
    cache = FrozenFeatureCache(model.backbone.frozen, 3 * one_map)
    want = embed_paths(model, paths, batch_size=4)
    for _ in range(2):  # the second pass decodes the 7 images the cache did not keep, within each batch
        np.testing.assert_allclose(embed_paths(model, paths, batch_size=4, cache=cache), want, atol=1e-5)
    assert len(cache) == 3 and cache.bytes == 3 * one_map and cache.misses == 10 + 7


def test_adopted_maps_are_served_like_its_own_within_the_budget(toy_street_images):
    model = tiny_model()
    paths = [str(p) for p in toy_street_images[:5]]
    worker = FrozenFeatureCache(model.backbone.frozen, 2**30)  # another worker's cache, filled by embedding
    want = embed_paths(model, paths, batch_size=5, cache=worker)
    one_map = worker.bytes // 5
    assert worker.map_shape is not None and len(worker.maps(paths)) == 5
    cache = FrozenFeatureCache(model.backbone.frozen, 3 * one_map)
    assert cache.map_shape is None
    assert cache.adopt(paths[:2], worker.maps(paths[:2])) == 2
    assert cache.adopt(paths, worker.maps(paths)) == 1  # 2 held already, room for 1 more
    assert cache.held(paths).tolist() == [True, True, True, False, False] and cache.adopted == 3
    np.testing.assert_allclose(embed_paths(model, paths, batch_size=5, cache=cache), want, atol=1e-5)
    assert (cache.hits, cache.misses) == (3, 2)


def test_the_cache_is_refused_where_it_does_not_apply(toy_street_images):
    model, other = tiny_model(), tiny_model(seed=1)
    cache = FrozenFeatureCache(model.backbone.frozen, 2**20)
    with pytest.raises(ValueError, match="another model's frozen layers"):
        embed_paths(other, [str(toy_street_images[0])], cache=cache)
    assert other.training  # left as it was
    with pytest.raises(ValueError, match="no frozen layers"):
        FrozenFeatureCache(tiny_model(train_from="all").backbone.frozen, 2**20)
    with pytest.raises(ValueError, match="2 images are not cached but 1 were decoded"):
        cache.features(["a.jpg", "b.jpg", "a.jpg"], torch.zeros(1, 3, 48, 64))
