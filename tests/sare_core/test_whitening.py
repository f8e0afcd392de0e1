import numpy as np
import pytest
import torch

from sare_core.descriptors import truncate
from sare_core.whitening import fit_pca_whitening


@pytest.mark.parametrize("n,d,k", [(500, 20, 8), (30, 100, 10)])  # covariance path and Gram path
def test_whitening_decorrelates_training_data(n, d, k):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0
    w = fit_pca_whitening(x, dim=k)
    z = (torch.as_tensor(x, dtype=torch.float32) - w.mean) @ w.projection
    cov = np.cov(z.numpy().T)
    np.testing.assert_allclose(cov, np.eye(k), atol=2e-3)
    # Directions are the top principal components (compare with numpy's SVD, up to sign).
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    plain = fit_pca_whitening(x, dim=k, whiten=False).projection.numpy()
    np.testing.assert_allclose(np.abs((plain * vt[:k].T).sum(0)), np.ones(k), atol=1e-4)
    out = w(torch.as_tensor(x[:5], dtype=torch.float32))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))


def test_whitening_dim_beyond_rank_is_an_error():
    with pytest.raises(ValueError, match="min\\(N-1, D\\)"):
        fit_pca_whitening(np.random.rand(10, 50), dim=10)


def test_truncate_keeps_leading_dims_and_renormalises():
    x = np.array([[3.0, 4.0, 12.0]])
    np.testing.assert_allclose(truncate(x, 2), [[0.6, 0.8]])
    t = truncate(torch.tensor(x), 1)
    assert torch.is_tensor(t) and t.item() == 1.0
    with pytest.raises(ValueError, match="k="):
        truncate(x, 4)
