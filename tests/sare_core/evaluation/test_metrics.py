import numpy as np
import pytest

from sare_core.data import positives_within
from sare_core.evaluation import (
    average_precision_at_k,
    evaluate,
    localization_errors,
    map_at_k,
    recall_at_n,
    recall_from_ranking,
)


def brute_force_recall(q, db, positives, ns):
    d2 = ((q[:, None].astype(np.float64) - db[None]) ** 2).sum(-1)
    order = np.argsort(d2, axis=1)
    out = {}
    for n in ns:
        hits = [len(p) > 0 and np.isin(order[i, :n], p).any() for i, p in enumerate(positives)]
        out[n] = float(np.mean(hits))
    return out


def test_recall_at_n_equals_brute_force_on_a_geometry():
    rng = np.random.default_rng(3)
    db_utm = rng.uniform(0, 500, size=(400, 2))
    q_utm = rng.uniform(0, 500, size=(120, 2))
    positives = positives_within(q_utm, db_utm, 25.0)
    # Descriptors that partly encode position, so recall is neither 0 nor 1.
    db = np.hstack([db_utm / 100, rng.normal(size=(400, 6))]).astype(np.float32)
    q = np.hstack([q_utm / 100, rng.normal(size=(120, 6))]).astype(np.float32)
    ns = (1, 2, 3, 4, 5, 10)
    got = recall_at_n(q, db, positives, ns=ns)
    assert got == pytest.approx(brute_force_recall(q, db, positives, ns))
    assert 0 < got[1] < got[10] < 1


def test_queries_without_positives_are_misses_and_counted():
    ranked = np.array([[0, 1], [2, 3], [4, 5]])
    positives = [np.array([1]), np.array([], dtype=np.int64), np.array([9])]
    assert recall_from_ranking(ranked, positives, (1, 2)) == {1: 0.0, 2: pytest.approx(1 / 3)}
    q = np.eye(3, 4, dtype=np.float32)
    ev, _ = evaluate(q, np.eye(6, 4, dtype=np.float32), positives, ns=(1, 2))
    assert ev.queries_without_positives == 1 and ev.num_queries == 3 and ev.num_database == 6


def test_average_precision_hand_values():
    # relevant at ranks 1 and 3 of 2 positives: (1/1 + 2/3) / 2
    assert average_precision_at_k(np.array([7, 0, 8]), np.array([7, 8])) == pytest.approx((1 + 2 / 3) / 2)
    # only 1 of 3 positives retrieved, at rank 2: (1/2) / 3
    assert average_precision_at_k(np.array([0, 7]), np.array([7, 8, 9])) == pytest.approx(1 / 6)
    # queries without positives are left out of the mean
    ranked = np.array([[7, 0, 8], [1, 2, 3]])
    assert map_at_k(ranked, [np.array([7, 8]), np.array([], dtype=np.int64)], k=100) == pytest.approx((1 + 2 / 3) / 2)
    # the cut at k: a positive at rank 3 does not count for k=2, and the normaliser is min(m, k)
    assert average_precision_at_k(np.array([7, 0, 8]), np.array([7, 8, 9]), k=2) == pytest.approx(1 / 2)


def test_localization_errors_in_metres():
    err = localization_errors(np.array([1, -1]), np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([[9.0, 9.0], [3.0, 4.0]]))
    assert err[0] == pytest.approx(5.0) and np.isnan(err[1])
    ev, ranked = evaluate(np.zeros((1, 2), np.float32), np.array([[0, 0], [1, 1]], np.float32), [np.array([0])],
                          ns=(1,), q_utm=np.array([[0.0, 0.0]]), db_utm=np.array([[30.0, 40.0], [0.0, 0.0]]))
    assert ev.localization == {"median_m": 50.0, "within_25m": 0.0} and ranked[0, 0] == 0
