"""The half-precision guard (`sare_core.precision.computed_in_float32`) on the layers that carry it: under
autocast their output is the float32 one, and the same layer left to autocast is visibly off. The CPU's
bfloat16 autocast stands in for the GPU's float16 (docs/BENCHMARKS.md, "GPU path", measures that on a card)."""

import numpy as np
import pytest
import torch

from sare_core.models import NetVLAD
from sare_core.whitening import fit_pca_whitening


def netvlad_and_input():
    # alpha-scaled logits, and a residual sum that is a difference of near-equal terms
    torch.manual_seed(0)
    return NetVLAD(num_clusters=16, dim=64), torch.relu(torch.randn(2, 64, 12, 15))


def whitening_and_input():
    # centred, L2-normalised descriptors (small values) scaled up by 1/sqrt(eigenvalue)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 256)).astype(np.float32) * np.linspace(1, 0.01, 256, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return fit_pca_whitening(x, 64), torch.from_numpy(x[:20])


# (layer and input, the smallest max |difference| the half-precision layer shows: 1.1e-2 and 2.5e-3 measured)
@pytest.mark.parametrize(("make", "halved_at_least"), [(netvlad_and_input, 1e-3), (whitening_and_input, 1e-3)],
                         ids=["netvlad", "whitening"])
def test_the_layer_computes_in_float32_under_autocast(make, halved_at_least):
    layer, x = make()
    with torch.no_grad():
        exact = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            guarded = layer(x)
            layer.float32_under_autocast = False
            halved = layer(x)
    assert guarded.dtype == torch.float32
    torch.testing.assert_close(guarded, exact, rtol=0, atol=1e-6)
    assert (halved.float() - exact).abs().max() > halved_at_least
