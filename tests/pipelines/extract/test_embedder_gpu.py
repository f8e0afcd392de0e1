"""The extraction actor's GPU path: uint8 pixels normalised on the device, channels-last memory format and
float16 autocast give the float32 descriptors within a stated tolerance. Skipped without CUDA."""

import copy

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
def test_autocast_channels_last_equals_float32(backbone, toy_street_images, monkeypatch):
    weights = "imagenet" if backbone == "efficientnet_lite0" else "none"
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, weights=weights, num_clusters=16, whitening_dim=None,
                                    image_size=(240, 320))).eval()
    prep = model.preprocessor
    pixels = np.stack([prep.to_uint8(load_rgb(str(p))) for p in toy_street_images[:8]])
    # ImageEmbedder moves its model to the device and memory format in place: each one gets its own copy.
    fast = ImageEmbedder(copy.deepcopy(model), use_gpu=True, mixed_precision=True, channels_last=True).embed(pixels)
    # The float32 reference without TF32 (PyTorch lets cuDNN use it by default), so it is the CPU's arithmetic.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    exact = ImageEmbedder(copy.deepcopy(model), use_gpu=True, mixed_precision=False, channels_last=False).embed(pixels)
    cpu = ImageEmbedder(copy.deepcopy(model), use_gpu=False).embed(pixels)
    assert np.abs(fast - exact).max() < MAX_ABS_DIFFERENCE
    assert (fast * exact).sum(1).min() > MIN_COSINE
    np.testing.assert_allclose(exact, cpu, atol=1e-4)  # float32 on the GPU is the CPU's result


@pytest.mark.gpu
@pytest.mark.parametrize("mixed_precision", [True, False])
def test_a_shared_frozen_prefix_on_the_gpu_gives_each_models_descriptors(mixed_precision, toy_street_images):
    torch.manual_seed(0)
    base = build_model(ModelConfig(backbone="efficientnet_lite0", weights="imagenet", num_clusters=16,
                                   whitening_dim=None, image_size=(240, 320), train_from="blocks4")).eval()
    tuned = build_model(base.config).eval()
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        for param in tuned.trainable_parameters():
            param.add_(0.01 * torch.randn_like(param))
    pixels = np.stack([base.preprocessor.to_uint8(load_rgb(str(p))) for p in toy_street_images[:8]])
    options = {"use_gpu": True, "mixed_precision": mixed_precision, "channels_last": True}
    together = ImageEmbedder([base, tuned], **options)
    assert together.groups == [[0, 1]]
    got = together.embed_all(pixels)
    for model, have in zip((base, tuned), got):
        np.testing.assert_allclose(have, ImageEmbedder(model, **options).embed(pixels), atol=1e-5)
