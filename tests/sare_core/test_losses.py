import math
from functools import partial

import pytest
import torch

from sare_core.losses import (
    KERNELS,
    LossSpec,
    build_loss,
    contrastive_loss,
    sare_loss,
    triplet_loss,
)

# One query at the origin, positive at distance 1, negatives at distances 2 and 3.
Q = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
P = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
N = torch.tensor([[[0.0, 2.0], [3.0, 0.0]]], dtype=torch.float64)

HAND = {
    # kernel: (ind, joint), from s_p and s_k written out by hand.
    "gaussian": (math.log(1 + math.exp(-3)) + math.log(1 + math.exp(-8)), math.log(1 + math.exp(-3) + math.exp(-8))),
    "cauchy": (-math.log(0.5 / 0.7) - math.log(0.5 / 0.6), -math.log(0.5 / 0.8)),
    "exponential": (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1) + math.exp(-2))),
}


@pytest.mark.parametrize("kernel", KERNELS)
def test_sare_matches_hand_computed_values(kernel):
    ind, joint = HAND[kernel]
    assert sare_loss(Q, P, N, kernel=kernel, mode="ind").item() == pytest.approx(ind, rel=1e-12)
    assert sare_loss(Q, P, N, kernel=kernel, mode="joint").item() == pytest.approx(joint, rel=1e-12)


def _similarity(d2, kernel, t=1.0):
    """The contract's kernels of the scaled squared distance u = d^2 / t, written out directly."""
    u = d2 / t
    if kernel == "gaussian":
        return torch.exp(-u)
    if kernel == "cauchy":
        return 1 / (1 + u)
    return torch.exp(-u.sqrt())


@pytest.mark.parametrize("kernel", KERNELS)
def test_sare_matches_the_definition_on_random_batches(kernel):
    g = torch.Generator().manual_seed(0)
    q, p, n = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 4, 8, generator=g, dtype=torch.float64)
    s_p = _similarity(((q - p) ** 2).sum(-1), kernel)
    s_n = _similarity(((q[:, None] - n) ** 2).sum(-1), kernel)
    ind = -torch.log(s_p[:, None] / (s_p[:, None] + s_n)).sum(1)
    joint = -torch.log(s_p / (s_p + s_n.sum(1)))
    torch.testing.assert_close(sare_loss(q, p, n, kernel, "ind", "none"), ind)
    torch.testing.assert_close(sare_loss(q, p, n, kernel, "joint", "none"), joint)
    torch.testing.assert_close(sare_loss(q, p, n, kernel, "joint", "mean"), joint.mean())
    torch.testing.assert_close(sare_loss(q, p, n, kernel, "ind", "sum"), ind.sum())


def test_triplet_and_contrastive_hand_values():
    n = torch.tensor([[[0.0, 1.02], [3.0, 0.0]]], dtype=torch.float64)  # d^2 = 1.0404 and 9
    # triplet: max(0, 1 + 0.1 - 1.0404) + max(0, 1 + 0.1 - 9)
    assert triplet_loss(Q, P, n, margin=0.1).item() == pytest.approx(0.0596, rel=1e-9)
    # contrastive with margin 1.5: d_p^2 + (1.5 - 1.02)^2 + 0
    assert contrastive_loss(Q, P, n, margin=1.5).item() == pytest.approx(1 + 0.48**2, rel=1e-9)
    assert triplet_loss(Q, P, n, reduction="none").shape == (1,)


def test_gaussian_sare_ind_gradient_matches_the_papers_closed_form():
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(3, 6, generator=g, dtype=torch.float64), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(3, 6, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    n = torch.nn.functional.normalize(torch.randn(3, 5, 6, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    sare_loss(q, p, n, kernel="gaussian", mode="ind", reduction="sum").backward()
    s_p = torch.exp(-((q - p) ** 2).sum(-1)).detach()
    s_k = torch.exp(-((q[:, None] - n) ** 2).sum(-1)).detach()
    c = s_p[:, None] / (s_p[:, None] + s_k)  # (B, N)
    expected_dp = (-2 * (1 - c)).sum(1, keepdim=True) * (q - p.detach())
    expected_dn = 2 * (1 - c)[..., None] * (q[:, None] - n.detach())
    torch.testing.assert_close(p.grad, expected_dp)
    torch.testing.assert_close(n.grad, expected_dn)


# Every (loss, kernel) pair that exists: kernels apply to SARE only.
LOSS_VARIANTS = [(n, k) for n in ("sare_ind", "sare_joint") for k in KERNELS] + [("triplet", None), ("contrastive", None)]


def _spec(name, kernel):
    return LossSpec(name=name, kernel=kernel) if kernel else LossSpec(name=name)


@pytest.mark.parametrize("name,kernel", LOSS_VARIANTS)
def test_gradcheck_float64(name, kernel):
    loss = build_loss(_spec(name, kernel))
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (q, p, n))


@pytest.mark.parametrize("name,kernel", LOSS_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_at_large_distances(name, kernel, dtype):
    loss = build_loss(_spec(name, kernel))
    # Unit vectors: positive antipodal (d^2 = 4), negative identical to the query (d^2 = 0): the worst case.
    q = torch.tensor([[1.0, 0.0]], dtype=dtype)
    p = (-q).clone().requires_grad_()
    n = q[:, None].clone().repeat(1, 3, 1).requires_grad_()
    value = loss(q, p, n)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(p.grad).all() and torch.isfinite(n.grad).all()
    # Unnormalised vectors with d^2 up to 1e4.
    q = torch.zeros(1, 2, dtype=dtype)
    p = torch.tensor([[100.0, 0.0]], dtype=dtype, requires_grad=True)
    n = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]], dtype=dtype, requires_grad=True)
    value = loss(q, p, n)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(p.grad).all() and torch.isfinite(n.grad).all()
    if kernel == "gaussian":
        # Loss is then about (d_p^2 - d_k^2) summed: large but exact, not saturated.
        expected = 1e4 + (1e4 - 1) if name == "sare_ind" else 1e4 + math.log(1 + math.exp(-1))
        assert value.item() == pytest.approx(expected, rel=1e-5)


def test_registry_errors_name_the_field():
    with pytest.raises(ValueError, match="loss.name"):
        build_loss("arcface")
    with pytest.raises(ValueError, match="loss.kernel"):
        build_loss({"name": "sare_ind", "kernel": "laplace"})
    with pytest.raises(ValueError, match="unknown field"):
        build_loss({"name": "triplet", "margn": 0.2})
    with pytest.raises(ValueError, match="reduction"):
        sare_loss(Q, P, N, reduction="avg")
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        sare_loss(Q, P, N[0])


def test_registry_builds_each_named_loss():
    expected = {
        "sare_ind": sare_loss(Q, P, N, "cauchy", "ind"),
        "sare_joint": sare_loss(Q, P, N, "cauchy", "joint"),
        "triplet": triplet_loss(Q, P, N, margin=0.3),
        "contrastive": contrastive_loss(Q, P, N, margin=0.3),
    }
    for name, value in expected.items():
        spec = {"name": name, "kernel": "cauchy"} if name.startswith("sare") else {"name": name, "margin": 0.3}
        torch.testing.assert_close(build_loss(spec)(Q, P, N), value)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("t", [0.05, 0.3, 2.0])
def test_temperature_matches_the_definition(kernel, t):
    g = torch.Generator().manual_seed(3)
    q = torch.nn.functional.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    n = torch.nn.functional.normalize(torch.randn(6, 5, 8, generator=g, dtype=torch.float64), dim=-1)
    s_p = _similarity(((q - p) ** 2).sum(-1), kernel, t)
    s_n = _similarity(((q[:, None] - n) ** 2).sum(-1), kernel, t)
    ind = -torch.log(s_p[:, None] / (s_p[:, None] + s_n)).sum(1)
    joint = -torch.log(s_p / (s_p + s_n.sum(1)))
    torch.testing.assert_close(sare_loss(q, p, n, kernel, "ind", "none", temperature=t), ind)
    torch.testing.assert_close(sare_loss(q, p, n, kernel, "joint", "none", temperature=t), joint)
    # The registry passes the temperature through.
    spec = {"name": "sare_joint", "kernel": kernel, "temperature": t, "reduction": "none"}
    torch.testing.assert_close(build_loss(spec)(q, p, n), joint)


@pytest.mark.parametrize("kernel", KERNELS)
def test_temperature_one_is_the_papers_loss_exactly(kernel):
    g = torch.Generator().manual_seed(4)
    q, p, n = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(4, 3, 6, generator=g)
    for mode in ("ind", "joint"):
        assert torch.equal(sare_loss(q, p, n, kernel, mode), sare_loss(q, p, n, kernel, mode, temperature=1.0))
        assert torch.equal(build_loss({"name": f"sare_{mode}", "kernel": kernel})(q, p, n),
                           sare_loss(q, p, n, kernel, mode))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ["ind", "joint"])
def test_gradcheck_with_temperature(kernel, mode):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for t in (0.07, 5.0):
        assert torch.autograd.gradcheck(partial(sare_loss, kernel=kernel, mode=mode, temperature=t), (q, p, n))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ["ind", "joint"])
@pytest.mark.parametrize("t", [1e-6, 1e-3, 1e3, 1e6])
def test_finite_at_extreme_temperatures(kernel, mode, t):
    # Unit vectors, the worst case (positive antipodal, a negative equal to the query), in float32.
    q = torch.tensor([[1.0, 0.0]])
    p = (-q).clone().requires_grad_()
    n = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], requires_grad=True)
    value = sare_loss(q, p, n, kernel, mode, temperature=t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(p.grad).all() and torch.isfinite(n.grad).all()
    if t == 1e-6 and kernel == "gaussian" and mode == "joint":
        # s_p / s_k = exp(-(4 - 0) / t): the loss is (4 - 0) / t to float32 precision, not saturated.
        assert value.item() == pytest.approx(4 / t, rel=1e-5)


def test_temperature_errors_name_the_field():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            sare_loss(Q, P, N, temperature=bad)
        with pytest.raises(ValueError, match="loss.temperature"):
            build_loss({"name": "sare_ind", "temperature": bad})
    with pytest.raises(ValueError, match="loss.temperature is not used by triplet"):
        build_loss({"name": "triplet", "temperature": 0.1})
