"""Per-location attribution of NetVLAD / GeM descriptors: exact decompositions, documented normalisation,
left-out locations contribute nothing."""

import pytest
import torch
import torch.nn.functional as F

from sare_core.evaluation.attribution import (
    contribution_maps,
    gem_terms,
    netvlad_from_terms,
    netvlad_terms,
    similarity_maps,
)
from sare_core.models import ModelConfig, build_model
from sare_core.whitening import fit_pca_whitening


def tiny_model(pooling: str, whitening: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(backbone="tiny", pooling=pooling, num_clusters=4, whitening_dim=None,
                                    image_size=(32, 48))).eval()
    if pooling == "netvlad":  # sharper, data-like assignments than the random initialisation
        model.pool.init_from_centroids(F.normalize(torch.randn(4, 64), dim=1), alpha=5.0)
    if whitening:
        with torch.no_grad():
            desc = model.pooled(torch.randn(40, 3, 32, 48)).numpy()
        model.set_whitening(fit_pca_whitening(desc, 12))
    return model


@pytest.mark.parametrize("pooling", ["netvlad", "gem"])
def test_contribution_maps_are_non_negative_and_sum_to_one(pooling):
    model = tiny_model(pooling, whitening=False)
    images = torch.randn(3, 3, 32, 48)
    maps = contribution_maps(model, images)
    assert maps.shape == (3, 4, 6)  # the tiny backbone has stride 8
    assert (maps >= 0).all()
    assert maps.sum(dim=(1, 2)) == pytest.approx(torch.ones(3), abs=1e-5)


def test_netvlad_terms_sum_to_the_module_output():
    model = tiny_model("netvlad", whitening=False)
    with torch.no_grad():
        features = model.local_features(torch.randn(2, 3, 32, 48))
        x, a, scale = netvlad_terms(features, model.pool)
        assert torch.allclose(netvlad_from_terms(x, a, scale, model.pool), model.pool(features), atol=1e-6)


def test_a_left_out_location_contributes_nothing_netvlad():
    model = tiny_model("netvlad", whitening=False)
    images = torch.randn(2, 3, 32, 48)
    weights = torch.ones(4, 6)
    weights[:, -1] = 0  # leave out the last column of the feature map
    maps = contribution_maps(model, images, weights=weights)
    assert torch.all(maps[:, :, -1] == 0)
    assert maps.sum(dim=(1, 2)) == pytest.approx(torch.ones(2), abs=1e-5)
    with torch.no_grad():
        features = model.local_features(images)
        kept = netvlad_from_terms(*netvlad_terms(features, model.pool, weights), model.pool)
        # exactly the descriptor of a feature map without that column
        assert torch.allclose(kept, model.pool(features[..., :-1].contiguous()), atol=1e-6)
    # ... and of the similarity, too
    target = F.normalize(torch.randn(2, model.descriptor_dim), dim=1)
    sims, bias = similarity_maps(model, images, target, weights=weights)
    assert torch.all(sims[:, :, -1] == 0)


def test_a_left_out_location_contributes_nothing_gem():
    model = tiny_model("gem", whitening=False)
    images = torch.randn(2, 3, 32, 48)
    weights = torch.ones(2, 4, 6)
    weights[0, 1, 2] = 0
    weights[1, 3, :] = 0
    maps = contribution_maps(model, images, weights=weights)
    assert maps[0, 1, 2] == 0 and torch.all(maps[1, 3, :] == 0)
    with torch.no_grad():
        features = model.local_features(images)
        share, g = gem_terms(features, model.pool, weights)
        assert torch.allclose(share.sum(2), torch.ones_like(g), atol=1e-5)  # shares of each channel sum to 1
        assert torch.allclose(g[1:], model.pool(features[1:, :, :3].contiguous()), atol=1e-5)


@pytest.mark.parametrize("pooling", ["netvlad", "gem"])
@pytest.mark.parametrize("whitening", [False, True])
def test_similarity_maps_sum_to_the_cosine_similarity(pooling, whitening):
    model = tiny_model(pooling, whitening)
    queries, database = torch.randn(3, 3, 32, 48), torch.randn(3, 3, 32, 48)
    with torch.no_grad():
        q, db = model(queries), model(database)
    maps, bias = similarity_maps(model, queries, db)
    assert maps.shape == (3, 4, 6)
    expected = (q * db).sum(1)
    assert maps.sum(dim=(1, 2)) + bias == pytest.approx(expected, abs=1e-4)
    if not whitening:
        assert torch.all(bias == 0)
    # against itself: the similarity is 1
    own, own_bias = similarity_maps(model, queries, q)
    assert own.sum(dim=(1, 2)) + own_bias == pytest.approx(torch.ones(3), abs=1e-4)


def test_bad_inputs_name_the_problem():
    model = tiny_model("netvlad", whitening=False)
    images = torch.randn(2, 3, 32, 48)
    with pytest.raises(ValueError, match="weights must be"):
        contribution_maps(model, images, weights=torch.ones(3, 3))
    with pytest.raises(ValueError, match="non-negative"):
        contribution_maps(model, images, weights=-torch.ones(4, 6))
    with pytest.raises(ValueError, match="targets must be"):
        similarity_maps(model, images, torch.ones(2, 5))


def naive_netvlad_location_terms(model, images: torch.Tensor) -> torch.Tensor:
    """(B, HW, K, C) location terms r_i written out from the NetVLAD definition, the big residual tensor
    and all: soft assignment a_ik = softmax_k(w_k . x_i + b_k), residual a_ik (x_i - c_k), each cluster
    scaled by 1 / |V_k| (intra-normalisation) and the whole by 1 / |V| (the final L2 normalisation)."""
    pool = model.pool
    x = F.normalize(model.local_features(images), dim=1).flatten(2).transpose(1, 2)  # (B, HW, C)
    w = pool.assignment.weight.reshape(pool.num_clusters, pool.dim)
    a = torch.softmax(x @ w.T + pool.assignment.bias, dim=2)  # (B, HW, K)
    residuals = a.unsqueeze(3) * (x.unsqueeze(2) - pool.centroids.view(1, 1, pool.num_clusters, pool.dim))
    v = residuals.sum(1)  # (B, K, C)
    intra = v / v.norm(dim=2, keepdim=True)
    total = intra.flatten(1).norm(dim=1)
    return residuals / v.norm(dim=2).view(-1, 1, pool.num_clusters, 1) / total.view(-1, 1, 1, 1)


def test_maps_equal_the_netvlad_terms_written_out_by_hand():
    """contribution_maps and similarity_maps against the location terms computed the naive way."""
    model = tiny_model("netvlad", whitening=False, seed=3)
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        terms = naive_netvlad_location_terms(model, images)  # (B, HW, K, C)
        torch.testing.assert_close(terms.sum(1).flatten(1), model(images), atol=1e-6, rtol=1e-5)
        norms = terms.flatten(2).norm(dim=2)
        expected = norms / norms.sum(1, keepdim=True)
        h, w = model.local_features(images).shape[-2:]
        got = contribution_maps(model, images)
        torch.testing.assert_close(got, expected.view(2, h, w), atol=1e-6, rtol=1e-5)
        assert (got.flatten(1).argmax(1) == expected.argmax(1)).all()
        target = F.normalize(torch.randn(2, model.descriptor_dim), dim=1)
        maps, bias = similarity_maps(model, images, target)
        dots = (terms.flatten(2) * target.unsqueeze(1)).sum(2)  # <r_i, t>
        torch.testing.assert_close(maps, dots.view(2, h, w), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(bias, torch.zeros(2))
