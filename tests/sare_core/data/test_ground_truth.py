"""Ground truth on the real Pitts30k-test geometry: evaluation positives (25 m), training positives (10 m),
negatives beyond 25 m, label variants, and the queries that can be trained on."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sare_core.data import (
    PlaceDataset,
    count_positives,
    negatives_beyond,
    positives_same_label,
    positives_within,
    trainable_queries,
    training_negatives,
    training_positives,
)
from sare_core.data.training_queries import negatives_different_label


@pytest.fixture(scope="module")
def pitts(shared_data) -> PlaceDataset:
    gt = np.load(shared_data / "real_gt" / "pitts30k_test.npz")
    q, db = gt["utmQ"], gt["utmDb"]
    return PlaceDataset("pitts30k_test", [f"db{i}.jpg" for i in range(len(db))],
                        [f"q{i}.jpg" for i in range(len(q))], db_utm=db, q_utm=q, split="test")


def _distances(dataset: PlaceDataset, queries: np.ndarray) -> np.ndarray:
    return np.linalg.norm(dataset.q_utm[queries, None, :] - dataset.db_utm[None], axis=-1)


def test_positives_within_25_and_10_metres_match_distances(pitts):
    sample = np.arange(0, pitts.num_q, 97)
    dist = _distances(pitts, sample)
    eval_pos = pitts.positives()
    train_pos = training_positives(pitts)
    for row, qi in enumerate(sample):
        np.testing.assert_array_equal(eval_pos[qi], np.flatnonzero(dist[row] <= 25.0))
        np.testing.assert_array_equal(train_pos[qi], np.flatnonzero(dist[row] <= 10.0))
        assert np.isin(train_pos[qi], eval_pos[qi]).all()
    # the training radius is configurable: via nontriv_pos_dist_sq_thr or explicitly
    assert [len(p) for p in training_positives(pitts, radius=25.0)] == [len(p) for p in eval_pos]
    assert [len(p) for p in pitts.train_positives()] == [len(p) for p in train_pos]


def test_negatives_only_beyond_25_metres(pitts):
    sample = np.arange(0, pitts.num_q, 211)
    negatives = training_negatives(pitts, queries=sample)
    dist = _distances(pitts, sample)
    for row, neg in enumerate(negatives):
        np.testing.assert_array_equal(neg, np.flatnonzero(dist[row] > 25.0))
    # images between 10 and 25 m are neither training positives nor negatives
    train_pos = training_positives(pitts)
    for row, qi in enumerate(sample):
        between = np.flatnonzero((dist[row] > 10.0) & (dist[row] <= 25.0))
        assert not np.isin(between, negatives[row]).any() and not np.isin(between, train_pos[qi]).any()
    wider = training_negatives(pitts, radius=50.0, queries=sample[:3])
    assert all(len(w) < len(n) for w, n in zip(wider, negatives[:3], strict=True))
    np.testing.assert_array_equal(negatives_beyond(pitts.q_utm[sample], pitts.db_utm, 25.0)[0], negatives[0])


def test_trainable_queries_drops_queries_without_training_positives(pitts, caplog):
    counts = count_positives(training_positives(pitts))
    expected = np.flatnonzero(counts > 0)
    assert 0 < len(expected) < pitts.num_q  # the real geometry has queries with nothing within 10 m
    with caplog.at_level(logging.INFO, logger="sare_core.data.training_queries"):
        keep = trainable_queries(pitts)
    np.testing.assert_array_equal(keep, expected)
    dropped = pitts.num_q - len(expected)
    assert f"dropped {dropped} of {pitts.num_q}" in caplog.text


def test_positives_within_edges():
    q = np.array([[0.0, 0.0], [100.0, 0.0]])
    db = np.array([[25.0, 0.0], [0.0, 25.0001], [10.0, 0.0]])
    assert [p.tolist() for p in positives_within(q, db, 25.0)] == [[0, 2], []]  # inclusive radius, sorted
    assert [p.tolist() for p in positives_within(q, np.zeros((0, 2)), 25.0)] == [[], []]
    with pytest.raises(ValueError, match="q_utm"):
        positives_within(np.array([[np.nan, 0.0]]), db, 25.0)
    with pytest.raises(ValueError, match="radius"):
        positives_within(q, db, -1.0)


def test_label_variants():
    db_labels = np.array([3, 1, 3, 2, -1, 1])
    q_labels = np.array([1, 3, 7, -1])
    assert [p.tolist() for p in positives_same_label(q_labels, db_labels)] == [[1, 5], [0, 2], [], []]
    assert [n.tolist() for n in negatives_different_label(q_labels, db_labels)] == [
        [0, 2, 3, 4], [1, 3, 4, 5], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]
    ds = PlaceDataset("lab", [f"d{i}" for i in range(6)], [f"q{i}" for i in range(4)],
                      db_labels=db_labels, q_labels=q_labels)
    assert [p.tolist() for p in training_positives(ds)] == [[1, 5], [0, 2], [], []]
    np.testing.assert_array_equal(trainable_queries(ds), [0, 1])
    # explicit positives (extras['q_positives']) override labels, and negatives exclude them
    explicit = PlaceDataset("lab", ds.db_paths, ds.q_paths, db_labels=db_labels, q_labels=q_labels,
                            extras={"q_positives": [[5], [0, 2, 4], [], []]})
    assert [p.tolist() for p in explicit.positives()] == [[5], [0, 2, 4], [], []]
    assert training_negatives(explicit)[1].tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match="q_positives"):
        PlaceDataset("lab", ds.db_paths, ds.q_paths, db_labels=db_labels, q_labels=q_labels,
                     extras={"q_positives": [[9], [], [], []]})
