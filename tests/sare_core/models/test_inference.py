"""Plain extraction (`embed_paths`): decoding runs a batch ahead in a thread; the descriptors, their order and
the errors are those of decoding and embedding one image at a time."""

import numpy as np
import pytest
import torch

from sare_core.models import ModelConfig, build_model
from sare_core.models.images import load_rgb
from sare_core.models.inference import embed_paths


def test_prefetched_batches_equal_one_image_at_a_time(toy_street_images):
    model = build_model(ModelConfig(backbone="tiny", num_clusters=8, whitening_dim=None, image_size=(48, 64)))
    model.train()
    paths = [str(p) for p in toy_street_images]  # 22 images: batches of 5 leave a short last one
    timings = {}
    got = embed_paths(model, paths, batch_size=5, timings=timings)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        want = np.concatenate([model(model.preprocessor(load_rgb(p))[None]).numpy() for p in paths])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert set(timings) == {"decode", "forward"} and timings["forward"] > 0
    again = embed_paths(model, paths[::-1], batch_size=4, timings=timings)
    np.testing.assert_allclose(again, got[::-1], atol=1e-5)
    assert embed_paths(model, [], batch_size=4).shape == (0, model.descriptor_dim)


def test_a_corrupt_image_in_a_later_batch_raises_naming_its_file(toy_street_images, tmp_path):
    model = build_model(ModelConfig(backbone="tiny", num_clusters=8, whitening_dim=None, image_size=(48, 64)))
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(toy_street_images[0].read_bytes()[:500])
    paths = [str(p) for p in toy_street_images[:6]] + [str(bad)]
    with pytest.raises(OSError, match="cut.jpg: cannot decode"):
        embed_paths(model, paths, batch_size=3)
