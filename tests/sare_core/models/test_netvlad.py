import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sare_core.models import GeM, NetVLAD, netvlad_alpha


def reference_vlad(x, weight, bias, centroids):
    """vlad_preL2_intra written out with explicit loops over clusters and positions (float64)."""
    b, c, h, w = x.shape
    k = centroids.shape[0]
    out = torch.zeros(b, k * c, dtype=torch.float64)
    for n in range(b):
        local = x[n].reshape(c, h * w).T.double()  # (HW, C)
        local = local / local.norm(dim=1, keepdim=True)
        logits = local @ weight.double().T + bias.double()  # (HW, K)
        assign = torch.softmax(logits, dim=1)
        blocks = []
        for j in range(k):
            resid = (assign[:, j : j + 1] * (local - centroids[j].double())).sum(0)
            blocks.append(resid / resid.norm())
        v = torch.cat(blocks)
        out[n] = v / v.norm()
    return out


def test_netvlad_matches_reference_formula():
    torch.manual_seed(0)
    layer = NetVLAD(num_clusters=5, dim=7, alpha=3.0)
    layer.init_from_centroids(torch.randn(5, 7) * 0.3)
    x = torch.randn(2, 7, 3, 4)
    expected = reference_vlad(x, layer.assignment.weight.reshape(5, 7), layer.assignment.bias, layer.centroids.detach())
    torch.testing.assert_close(layer(x).double(), expected, atol=1e-5, rtol=1e-5)


def test_output_is_cluster_major_intra_normalised_and_l2():
    torch.manual_seed(1)
    layer = NetVLAD(num_clusters=4, dim=6)
    out = layer(torch.randn(3, 6, 5, 5))
    assert out.shape == (3, 24) and layer.output_dim == 24
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    # After intra-normalisation every cluster block has the same norm: 1/sqrt(K) of the whole.
    blocks = out.reshape(3, 4, 6).norm(dim=2)
    torch.testing.assert_close(blocks, torch.full((3, 4), 0.5), atol=1e-5, rtol=0)


def test_init_from_centroids_sets_the_paper_initialisation():
    layer = NetVLAD(num_clusters=3, dim=4, alpha=10.0)
    c = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0.5, 0.5, 0.5, 0.5]])
    layer.init_from_centroids(c)
    torch.testing.assert_close(layer.assignment.weight.reshape(3, 4), 2 * 10.0 * c)
    torch.testing.assert_close(layer.assignment.bias, -10.0 * (c**2).sum(1))
    torch.testing.assert_close(layer.centroids.detach(), c)
    # The soft assignment is then softmax_k(-alpha |x - c_k|^2): check on one descriptor.
    layer_plain = NetVLAD(num_clusters=3, dim=4, alpha=10.0, normalize_input=False)
    layer_plain.init_from_centroids(c)
    x = torch.tensor([0.9, 0.1, 0.0, 0.1])
    a = layer_plain.soft_assignment(x.view(1, 4, 1, 1)).reshape(3)
    torch.testing.assert_close(a, torch.softmax(-10.0 * ((x - c) ** 2).sum(1), dim=0))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        layer.init_from_centroids(torch.zeros(2, 4))


def test_netvlad_gradcheck_float64():
    torch.manual_seed(2)
    layer = NetVLAD(num_clusters=3, dim=4, alpha=2.0).double()
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        NetVLAD(2, 8)(torch.randn(1, 4, 2, 2))


def test_data_driven_alpha():
    c = np.array([[0.0, 0.0], [1.0, 0.0]])
    x = np.array([[0.0, 0.0], [1.0, 0.0]])  # each at a centre: d2 gap is 1 for both
    assert netvlad_alpha(x, c) == pytest.approx(-np.log(0.01))


def test_gem_limits():
    x = torch.rand(2, 5, 4, 3) + 0.1
    avg = F.normalize(x.mean(dim=(2, 3)), dim=1)
    mx = F.normalize(x.amax(dim=(2, 3)), dim=1)
    torch.testing.assert_close(GeM(5, p=1.0)(x), avg)
    assert (GeM(5, p=200.0)(x) - mx).abs().max() < 0.02
    g = GeM(5)
    g(x).sum().backward()
    assert g.p.grad is not None
