import numpy as np
import pytest

from sare_core.data import PlaceDataset
from sare_core.mining import (
    GroundTruthForTraining,
    MiningState,
    mine_chunk,
    plan_chunk,
    sample_negative_pool,
)


@pytest.fixture(scope="module")
def street():
    """A 1 km street sampled every 2 m (database) and queries near it, with random descriptors."""
    rng = np.random.default_rng(0)
    db_utm = np.column_stack([np.arange(0, 1000, 2.0), np.zeros(500)])
    q_utm = np.column_stack([rng.uniform(0, 1000, 60), rng.normal(0, 3, 60)])
    q_utm[-1] = [5000.0, 5000.0]  # far from everything: no training positive
    ds = PlaceDataset("street", [f"db{i}" for i in range(500)], [f"q{i}" for i in range(60)], db_utm=db_utm, q_utm=q_utm)
    return ds, rng.normal(size=(60, 8)).astype(np.float32), rng.normal(size=(500, 8)).astype(np.float32)


def test_ground_truth_drops_queries_without_training_positives(street):
    ds, *_ = street
    gt = GroundTruthForTraining.from_dataset(ds)
    assert 59 not in gt.queries and len(gt.queries) == 59
    for q in gt.queries:
        d = np.linalg.norm(ds.db_utm[gt.potential_positives[q]] - ds.q_utm[q], axis=1)
        assert (d <= 10.0).all() and len(d) > 0


def test_mined_tuples_obey_the_distances_and_are_the_hardest(street):
    ds, q_desc_all, db_desc_all = street
    gt = GroundTruthForTraining.from_dataset(ds)
    state = MiningState()
    plan = plan_chunk(gt, ds.num_db, gt.queries[:30], state, pool_size=100, rng=np.random.default_rng(1))
    tuples = mine_chunk(plan, q_desc_all[plan.queries], db_desc_all[plan.cache_db], state, num_negatives=10)
    assert len(tuples) == 30
    for row in range(len(tuples)):
        q, p, negs = tuples.queries[row], tuples.positives[row], tuples.negatives[row]
        # positive: within 10 m, and the nearest potential positive in descriptor space
        assert np.linalg.norm(ds.db_utm[p] - ds.q_utm[q]) <= 10.0
        cands = gt.potential_positives[q]
        d_c = ((db_desc_all[cands] - q_desc_all[q]) ** 2).sum(1)
        assert p == cands[np.argmin(d_c)]
        # negatives: all beyond 25 m, and exactly the 10 nearest of the pool in descriptor space
        assert (np.linalg.norm(ds.db_utm[negs] - ds.q_utm[q], axis=1) > 25.0).all()
        pool = plan.pools[list(plan.queries).index(q)]
        d_pool = ((db_desc_all[pool] - q_desc_all[q]) ** 2).sum(1)
        assert set(negs.tolist()) == set(pool[np.argsort(d_pool)[:10]].tolist())
        assert len(set(negs.tolist())) == 10
    assert set(state.previous_negatives) == set(tuples.queries.tolist())


def test_previous_hard_negatives_join_the_next_pool(street):
    ds, q_desc, db_desc = street
    gt = GroundTruthForTraining.from_dataset(ds)
    state = MiningState()
    q = gt.queries[:1]
    plan1 = plan_chunk(gt, ds.num_db, q, state, 50, np.random.default_rng(2))
    first = mine_chunk(plan1, q_desc[plan1.queries], db_desc[plan1.cache_db], state, 10).negatives[0]
    plan2 = plan_chunk(gt, ds.num_db, q, state, 50, np.random.default_rng(3))
    assert set(first.tolist()) <= set(plan2.pools[0].tolist())
    second = mine_chunk(plan2, q_desc[plan2.queries], db_desc[plan2.cache_db], state, 10).negatives[0]
    # The old hard negatives are still in the pool, so the new ones are at least as hard.
    d = lambda rows: np.sort(((db_desc[rows] - q_desc[q[0]]) ** 2).sum(1))  # noqa: E731
    assert (d(second) <= d(first) + 1e-6).all()
    restored = MiningState.from_arrays(**state.to_arrays())
    assert {k: v.tolist() for k, v in restored.previous_negatives.items()} == {k: v.tolist() for k, v in state.previous_negatives.items()}


def test_negative_pool_sampling():
    rng = np.random.default_rng(0)
    excluded = np.arange(0, 100)
    pool = sample_negative_pool(1000, excluded, 200, rng)
    assert len(pool) == 200 and len(set(pool.tolist())) == 200 and not np.isin(pool, excluded).any()
    assert sorted(sample_negative_pool(110, excluded, 50, rng).tolist()) == list(range(100, 110))
