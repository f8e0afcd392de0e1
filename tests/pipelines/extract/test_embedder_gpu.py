"""The extraction actor's GPU path: uint8 pixels normalised on the device, channels-last memory format,
float16 autocast (NetVLAD in float32), torch.compile and batches queued ahead give the float32 descriptors
within a stated tolerance. Skipped without CUDA."""

import copy

import numpy as np
import pyarrow as pa
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
@pytest.mark.parametrize("compile_model", [True, False])  # compiled: `sare extract`'s default on a GPU
@pytest.mark.parametrize(("backbone", "clusters", "size"), [("efficientnet_lite0", 16, (240, 320)),
                                                            ("vgg16", 16, (240, 320)),
                                                            ("vgg16", 64, (480, 640))])  # the paper's model
def test_autocast_channels_last_equals_float32(backbone, clusters, size, compile_model, toy_street_images,
                                               monkeypatch):
    weights = "imagenet" if backbone == "efficientnet_lite0" else "none"
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, weights=weights, num_clusters=clusters, whitening_dim=None,
                                    image_size=size)).eval()
    prep = model.preprocessor
    pixels = np.stack([prep.to_uint8(load_rgb(str(p))) for p in toy_street_images[:8]])
    # ImageEmbedder moves its model to the device and memory format in place: each one gets its own copy.
    half = ImageEmbedder(copy.deepcopy(model), use_gpu=True, mixed_precision=True, channels_last=True,
                         compile_model=compile_model)
    fast = half.embed(pixels)
    # The float32 reference without TF32 (PyTorch lets cuDNN use it by default), so it is the CPU's arithmetic.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    exact = ImageEmbedder(copy.deepcopy(model), use_gpu=True, mixed_precision=False, channels_last=False).embed(pixels)
    cpu = ImageEmbedder(copy.deepcopy(model), use_gpu=False).embed(pixels)
    # Shown by `pytest -rA` (the device check keeps its log): what the tolerances were measured against.
    # Compiled: no fallback to eager happened (graph breaks would still pass this).
    assert (half.runners[0] is not half.models[0]) == compile_model
    print(f"{backbone} K={clusters} {size}: {'compiled' if compile_model else 'eager'}, "
          f"max |diff| {np.abs(fast - exact).max():.2e}, min cosine {(fast * exact).sum(1).min():.6f}")
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


@pytest.mark.gpu
def test_compiled_and_queued_ahead_each_image_gets_its_descriptor(toy_street_images):
    # What `sare extract` runs on a GPU: a group of 8 images in batches of 3, 3 and 2 (two static graphs),
    # each queued before the one before it is collected. Against each image embedded alone, eager: a batch
    # shape's own kernels move float16 results by about their rounding, a wrong row or a stale copy by far more.
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="vgg16", weights="none", num_clusters=16, whitening_dim=None,
                                    image_size=(240, 320))).eval()
    pixels = np.stack([model.preprocessor.to_uint8(load_rgb(str(p))) for p in toy_street_images[:8]])
    rows = pa.table({"id": [str(i) for i in range(8)], "pixels": [p.tobytes() for p in pixels],
                     "height": [pixels.shape[1]] * 8, "width": [pixels.shape[2]] * 8, "error": [""] * 8})
    embedder = ImageEmbedder(copy.deepcopy(model), batch_size=3, use_gpu=True, compile_model=True)
    out = embedder(rows)
    assert out.column("error").to_pylist() == [""] * 8 and embedder.runners[0] is not embedder.models[0]
    got = np.asarray(out.column("descriptor").to_pylist(), np.float32)
    eager = ImageEmbedder(copy.deepcopy(model), use_gpu=True)
    alone = np.concatenate([eager.embed(pixels[i:i + 1]) for i in range(8)])
    # Random weights make the photos' descriptors alike (cosine 0.96-0.98 on the CPU), yet below the bound:
    # a row swapped would not pass.
    assert max((alone[i] * alone[j]).sum() for i in range(8) for j in range(i)) < MIN_COSINE - 0.01
    print(f"queued, compiled against alone, eager: max |diff| {np.abs(got - alone).max():.2e}, "
          f"min cosine {(got * alone).sum(1).min():.6f}")
    assert np.abs(got - alone).max() < MAX_ABS_DIFFERENCE
    assert (got * alone).sum(1).min() > MIN_COSINE
