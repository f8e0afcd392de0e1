"""The extraction actor on the CPU: a group of images split into several batches, each queued before the one
before it is collected (what overlaps host and device work on a GPU), gives every image the descriptors it
gets alone, in its own row, and a batch a model fails on costs only the failing image."""

import numpy as np
import pyarrow as pa
import torch

from pipelines.extract.embedder import ImageEmbedder
from sare_core.models import ModelConfig, build_model
from sare_core.models.images import load_rgb, resized_uint8


def decoded_rows(pixels: np.ndarray) -> pa.Table:
    n, h, w, _ = pixels.shape
    return pa.table({"id": [str(i) for i in range(n)], "pixels": [p.tobytes() for p in pixels],
                     "height": [h] * n, "width": [w] * n, "error": [""] * n})


def descriptors(table: pa.Table, column: str = "descriptor") -> np.ndarray:
    return np.asarray(table.column(column).to_pylist(), np.float32)


def tiny_model_and_photos(toy_street_images, count: int) -> tuple[torch.nn.Module, np.ndarray]:
    """The tiny backbone (seed 0) and the first `count` street photos as (count, 48, 64, 3) uint8."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", num_clusters=8, max_side=96)).eval()
    return model, np.stack([resized_uint8(load_rgb(str(p)), (48, 64), None) for p in toy_street_images[:count]])


def embedded_alone(model, pixels: np.ndarray) -> np.ndarray:
    """Each image's descriptor from a batch of its own."""
    return np.concatenate([ImageEmbedder(model).embed(pixels[i:i + 1]) for i in range(len(pixels))])


def test_batches_queued_ahead_give_each_image_its_own_descriptor(toy_street_images):
    model, pixels = tiny_model_and_photos(toy_street_images, 8)
    out = ImageEmbedder(model, batch_size=3)(decoded_rows(pixels))  # batches of 3, 3 and 2
    alone = embedded_alone(model, pixels)
    assert out.column("error").to_pylist() == [""] * 8 and out.column("id").to_pylist() == list("01234567")
    np.testing.assert_allclose(descriptors(out), alone, atol=1e-6)


def test_a_failing_batch_between_good_ones_costs_only_its_failing_image(toy_street_images):
    model, pixels = tiny_model_and_photos(toy_street_images, 7)
    pixels[4] = 0  # in the second batch of three
    forward = model.forward

    def refuse_dark_images(images, from_frozen=False):
        if (images.flatten(1).std(dim=1) == 0).any():
            raise ValueError("a dark image")
        return forward(images, from_frozen)

    model.forward = refuse_dark_images
    out = ImageEmbedder(model, batch_size=3)(decoded_rows(pixels))
    errors = out.column("error").to_pylist()
    assert "a dark image" in errors[4] and errors[:4] + errors[5:] == [""] * 6
    good = [0, 1, 2, 3, 5, 6]
    np.testing.assert_allclose(descriptors(out)[good], embedded_alone(model, pixels[good]), atol=1e-6)


def test_a_batch_whose_descriptors_fail_to_come_back_is_retried_in_its_own_rows(toy_street_images):
    # On a GPU a batch can fail after it was queued, when its descriptors are collected (the CPU computes at
    # once, so the failure is made here): only that batch's images are redone, one by one, in their rows.
    model, pixels = tiny_model_and_photos(toy_street_images, 8)
    embedder = ImageEmbedder(model, batch_size=3)
    collect, calls = embedder._collect, []

    def second_batch_fails(launched):
        calls.append(len(launched[0][0]))
        if len(calls) == 2:
            raise RuntimeError("the device failed while this batch ran")
        return collect(launched)

    embedder._collect = second_batch_fails
    out = embedder(decoded_rows(pixels))
    assert calls == [3, 3, 2] and out.column("error").to_pylist() == [""] * 8
    alone = embedded_alone(model, pixels)
    np.testing.assert_allclose(descriptors(out), alone, atol=1e-6)
