import numpy as np
import pytest

from sare_core.evaluation import build_flat_index, knn_search, knn_search_stream, merge_topk
from sare_core.evaluation.search import num_gpus


def brute_force(q, db, k):
    d2 = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d2, order, 1), order


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, 24)).astype(np.float32), rng.standard_normal((1000, 24)).astype(np.float32)


@pytest.mark.parametrize("mode", ["flat", "cpu_shards", "stream", "auto"])
def test_every_mode_equals_brute_force(data, mode):
    q, db = data
    result = knn_search(q, db, k=10, mode=mode, num_shards=3)
    ref_d, ref_i = brute_force(q, db, 10)
    np.testing.assert_array_equal(result.indices, ref_i)
    np.testing.assert_allclose(result.distances, ref_d, rtol=1e-4, atol=1e-4)


def test_stream_over_uneven_batches_equals_single_flat_index(data):
    q, db = data
    flat = knn_search(q, db, k=15, mode="flat")
    cuts = [0, 7, 300, 301, 777, 1000]
    stream = knn_search_stream(q, (db[a:b] for a, b in zip(cuts[:-1], cuts[1:])), k=15)
    np.testing.assert_array_equal(stream.indices, flat.indices)
    np.testing.assert_allclose(stream.distances, flat.distances, rtol=1e-5)


def test_k_larger_than_database_is_padded(data):
    q, db = data
    for mode in ("flat", "stream"):
        r = knn_search(q[:3], db[:4], k=6, mode=mode)
        assert (r.indices[:, 4:] == -1).all() and np.isinf(r.distances[:, 4:]).all()
        assert sorted(r.indices[0, :4].tolist()) == [0, 1, 2, 3]


def test_merge_breaks_ties_by_index():
    d = np.array([[1.0, 2.0]], np.float32)
    i = np.array([[5, 9]])
    md, mi = merge_topk(d, i, np.array([[1.0, 3.0]], np.float32), np.array([[2, 1]]), k=3)
    assert mi.tolist() == [[2, 5, 9]] and md.tolist() == [[1.0, 1.0, 2.0]]


def test_errors():
    with pytest.raises(ValueError, match="dims"):
        knn_search(np.zeros((2, 3)), np.zeros((5, 4)), k=1)
    with pytest.raises(ValueError, match="search mode"):
        build_flat_index(np.zeros((5, 4)), mode="ivf")
    if num_gpus() == 0:
        with pytest.raises(ValueError, match="gpu"):
            build_flat_index(np.zeros((5, 4), np.float32), mode="gpu_shards")


@pytest.mark.gpu
def test_faiss_gpu_shards_equal_the_cpu_search():
    if num_gpus() == 0:
        pytest.skip("FAISS sees no GPU (faiss-gpu is not installed, or no device is visible)")
    rng = np.random.default_rng(1)
    q = rng.standard_normal((300, 128)).astype(np.float32)
    db = rng.standard_normal((50_000, 128)).astype(np.float32)
    cpu, gpu = knn_search(q, db, k=20, mode="flat"), knn_search(q, db, k=20, mode="gpu_shards")
    # GPU distances differ in the last bits (another summation order): ranks may swap only between
    # neighbours at (almost) the same distance.
    np.testing.assert_allclose(gpu.distances, cpu.distances, rtol=1e-4, atol=1e-3)
    assert (gpu.indices == cpu.indices).mean() > 0.999
