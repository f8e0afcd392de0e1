import numpy as np
import pytest
import torch
from PIL import Image

from sare_core.models import Preprocessor, load_rgb


def test_normalisation_per_backbone():
    img = Image.fromarray(np.full((10, 20, 3), 255, dtype=np.uint8))
    x = Preprocessor("efficientnet_lite0")(img)
    assert x.shape == (3, 10, 20) and torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5
    v = Preprocessor("vgg16")(img)
    torch.testing.assert_close(v[:, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


def test_resize_rules():
    img = Image.new("RGB", (1280, 960))
    assert Preprocessor("vgg16", max_side=640)(img).shape == (3, 480, 640)
    assert Preprocessor("vgg16", max_side=2000)(img).shape == (3, 960, 1280)  # never enlarged
    assert Preprocessor("vgg16", image_size=(120, 160))(img).shape == (3, 120, 160)
    with pytest.raises(ValueError, match="not both"):
        Preprocessor("vgg16", image_size=(1, 1), max_side=2)


def test_batch_normalisation_equals_per_image(toy_street_images):
    prep = Preprocessor("resnet18", image_size=(60, 80))
    imgs = [load_rgb(str(p)) for p in toy_street_images[:3]]
    pixels = np.stack([prep.to_uint8(i) for i in imgs])
    torch.testing.assert_close(prep.normalize_uint8(pixels), torch.stack([prep(i) for i in imgs]))


def test_truncated_image_fails_at_load(tmp_path, toy_street_images):
    data = toy_street_images[0].read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(OSError):
        load_rgb(str(bad))
