import numpy as np
import pytest
import torch

from sare_core.models import (
    ModelConfig,
    build_model,
    init_netvlad_centroids,
    kmeans_centroids,
    load_model,
    model_hash,
    save_model,
)
from sare_core.whitening import fit_pca_whitening


def tiny_config(**kw):
    return ModelConfig(backbone="tiny", num_clusters=8, whitening_dim=None, image_size=(48, 64), **kw)


def test_descriptors_are_l2_normalised_with_the_right_size():
    model = build_model(tiny_config()).eval()
    out = model(torch.randn(3, 3, 48, 64))
    assert out.shape == (3, 8 * 64) and model.descriptor_dim == 512
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_channel_reduction_and_gem():
    model = build_model(tiny_config(reduction_dim=16))
    assert model(torch.randn(2, 3, 48, 64)).shape == (2, 8 * 16)
    gem = build_model(tiny_config(pooling="gem"))
    assert gem(torch.randn(2, 3, 48, 64)).shape == (2, 64)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="num_cluster"):
        ModelConfig(num_cluster=3)
    with pytest.raises(ValueError, match="cut"):
        ModelConfig(backbone="resnet18", cut="conv5_3")
    with pytest.raises(ValueError, match="image_size or max_side"):
        ModelConfig(image_size=(64, 64), max_side=640)


def test_kmeans_centroid_initialisation_from_images():
    torch.manual_seed(0)
    model = build_model(tiny_config())
    batches = [torch.randn(4, 3, 48, 64) for _ in range(3)]
    centroids = init_netvlad_centroids(model, batches, per_image=20, seed=0)
    assert centroids.shape == (8, 64)
    torch.testing.assert_close(model.pool.centroids.detach(), torch.from_numpy(centroids))
    torch.testing.assert_close(model.pool.assignment.weight.reshape(8, 64), 2 * model.pool.alpha * torch.from_numpy(centroids))
    x = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    x[:250] += 10
    c = kmeans_centroids(x, 2, seed=0)
    assert sorted(np.round(c.mean(axis=1)).tolist()) == [0.0, 10.0]


def test_whitened_model_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    images = torch.randn(40, 3, 48, 64)
    with torch.no_grad():
        pooled = model.pooled(images)
    model.set_whitening(fit_pca_whitening(pooled.numpy(), dim=16))
    assert model.descriptor_dim == 16
    path = tmp_path / "model.pt"
    digest = save_model(str(path), model, metadata={"seed": 0})
    # Loadable with weights_only=True (no pickled code).
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["backbone"] == "tiny" and payload["model_hash"] == digest
    loaded = load_model(str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    assert model_hash(loaded) == digest and loaded.metadata == {"seed": 0}
    # Any change of weights changes the hash.
    with torch.no_grad():
        loaded.pool.centroids[0, 0] += 1
    assert model_hash(loaded) != digest


def test_load_rejects_foreign_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a saved SARE model"):
        load_model(str(path))
