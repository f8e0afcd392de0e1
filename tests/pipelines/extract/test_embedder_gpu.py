"""The extraction actor's GPU path: uint8 pixels normalised on the device, channels-last memory format and
float16 autocast give the float32 descriptors within a stated tolerance. Skipped without CUDA."""

import numpy as np
import pytest
import torch

from pipelines.extract.embedder import ImageEmbedder
from sare_core.models.config import ModelConfig
from sare_core.models.embedding import build_model
from sare_core.models.images import load_rgb

# L2-normalised descriptors: float16 autocast keeps every component within 5e-3 of float32 and the cosine
# similarity of each descriptor with its float32 self above 0.999.
MAX_ABS_DIFFERENCE = 5e-3
MIN_COSINE = 0.999


@pytest.mark.gpu
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "vgg16"])
def test_autocast_channels_last_equals_float32(backbone, toy_street_images):
    weights = "imagenet" if backbone == "efficientnet_lite0" else "none"
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, weights=weights, num_clusters=16, whitening_dim=None,
                                    image_size=(240, 320))).eval()
    prep = model.preprocessor
    pixels = np.stack([prep.to_uint8(load_rgb(str(p))) for p in toy_street_images[:8]])
    fast = ImageEmbedder(model, use_gpu=True, mixed_precision=True, channels_last=True).embed(pixels)
    exact = ImageEmbedder(model, use_gpu=True, mixed_precision=False, channels_last=False).embed(pixels)
    cpu = ImageEmbedder(model, use_gpu=False).embed(pixels)
    assert np.abs(fast - exact).max() < MAX_ABS_DIFFERENCE
    assert (fast * exact).sum(1).min() > MIN_COSINE
    np.testing.assert_allclose(exact, cpu, atol=1e-4)  # float32 on the GPU is the CPU's result
