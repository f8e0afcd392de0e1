"""Localisation indexes over descriptor stores: exact flat equals brute force, the approximate kinds find
most of its neighbours, shards equal one index, files round-trip (local and S3), another model is refused."""

import numpy as np
import pytest

from sare_core.index.faiss_index import IndexSpec
from sare_core.index.position import estimate_position, match_weights
from sare_core.index.store_index import LocalizationIndex, ModelMismatchError, build_index
from sare_core.store import StoreMetadata, write_store

DIM = 32


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A store of 3,000 database rows (unit vectors near their place's code) and 50 query vectors."""
    rng = np.random.default_rng(0)
    places = rng.normal(size=(300, DIM))
    which = rng.integers(0, 300, size=3000)
    db = places[which] + 0.3 * rng.normal(size=(3000, DIM))
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q_which = rng.integers(0, 300, size=50)
    q = places[q_which] + 0.3 * rng.normal(size=(50, DIM))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    utm = np.column_stack([which * 100.0, np.zeros(3000)])
    uri = str(tmp_path_factory.mktemp("store") / "s")
    write_store(uri, StoreMetadata(dim=DIM, model_hash="modelA"), ids=[f"img/{i:05d}.jpg" for i in range(3000)],
                roles="database", descriptors=db.astype(np.float32), utm=utm, splits="test", rows_per_part=400)
    return uri, db.astype(np.float32), q.astype(np.float32), utm


def brute_force(q, db, k):
    d = ((q[:, None] - db[None]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def test_flat_index_equals_brute_force_and_carries_ids_and_coordinates(database, tmp_path):
    uri, db, q, utm = database
    record = build_index(uri, str(tmp_path / "flat"), IndexSpec(kind="flat"))
    assert record["count"] == 3000 and record["model_hash"] == "modelA" and record["bytes_per_vector"] == 4 * DIM
    index = LocalizationIndex.load(str(tmp_path / "flat"), expected_model_hash="modelA")
    matches = index.search(q, 10)
    expected = brute_force(q, db, 10)
    for row, got in zip(expected, matches):
        assert [m.id for m in got] == [f"img/{i:05d}.jpg" for i in row]
        assert [m.utm for m in got] == [tuple(utm[i]) for i in row]
        assert all(a.distance <= b.distance for a, b in zip(got, got[1:]))


@pytest.mark.parametrize("spec", [IndexSpec(kind="ivfpq", nlist=16, pq_m=8, nprobe=8),
                                  IndexSpec(kind="hnsw", hnsw_m=16)])
def test_approximate_kinds_find_most_exact_neighbours(database, tmp_path, spec):
    uri, db, q, _ = database
    record = build_index(uri, str(tmp_path / spec.kind), spec)
    assert record["kind"] == spec.kind and record["count"] == 3000
    index = LocalizationIndex.load(str(tmp_path / spec.kind))
    got = [int(m.id[4:9]) for matches in index.search(q, 1) for m in matches]
    exact = brute_force(q, db, 10)
    # The approximate top-1 is among the exact top-10 for nearly every query.
    assert np.mean([g in row for g, row in zip(got, exact)]) >= 0.9


def test_search_knob_trades_recall_for_work(database, tmp_path):
    """nprobe = nlist visits every list, so it finds at least what one list finds; the record says what is set."""
    uri, db, q, _ = database
    build_index(uri, str(tmp_path / "ivf"), IndexSpec(kind="ivfpq", nlist=16, pq_m=8, nprobe=4))
    index = LocalizationIndex.load(str(tmp_path / "ivf"))
    exact = brute_force(q, db, 10)

    def hits(nprobe):
        index.set_search_params(nprobe=nprobe)
        assert index.record["spec"]["nprobe"] == nprobe
        return sum(int(m.id[4:9]) in row for matches, row in zip(index.search(q, 10), exact) for m in matches)

    one, every = hits(1), hits(16)
    assert every > one
    with pytest.raises(ValueError, match="nprobe"):
        index.set_search_params(nprobe=0)


def test_reranked_ivfpq_finds_the_exact_neighbours_its_codes_miss(database, tmp_path):
    """A coarse PQ (4 bytes for 32 dims) ranks poorly; re-ranking its shortlist of 50 by exact distance to the
    float16 copies recovers the exact top-1, and a sharded build writes the same copies as one build."""
    uri, db, q, _ = database
    exact = brute_force(q, db, 10)
    spec = IndexSpec(kind="ivfpq", nlist=16, pq_m=4, nprobe=16, rerank=50)
    record = build_index(uri, str(tmp_path / "one"), spec)
    assert record["refine_bytes_per_vector"] == 2 * DIM
    index = LocalizationIndex.load(str(tmp_path / "one"))
    np.testing.assert_array_equal(index.refine, db.astype(np.float16))

    def top1(idx):
        return np.mean([int(m[0].id[4:9]) == row[0] for m, row in zip(idx.search(q, 5), exact)])

    reranked = top1(index)
    index.set_search_params(rerank=0)
    codes_only = top1(index)
    assert reranked >= 0.95 and reranked > codes_only
    build_index(uri, str(tmp_path / "three"), spec, shards=3)
    three = LocalizationIndex.load(str(tmp_path / "three"))
    np.testing.assert_array_equal(three.refine, index.refine)
    assert top1(three) == reranked
    with pytest.raises(ValueError, match="rerank apply to kind ivfpq"):
        IndexSpec(kind="hnsw", rerank=10)
    build_index(uri, str(tmp_path / "plain"), IndexSpec(kind="ivfpq", nlist=16, pq_m=4))
    with pytest.raises(ValueError, match="built without re-ranking vectors"):
        LocalizationIndex.load(str(tmp_path / "plain")).set_search_params(rerank=20)


def test_shards_search_as_one_index(database, tmp_path):
    uri, db, q, _ = database
    build_index(uri, str(tmp_path / "one"), IndexSpec(kind="flat"))
    record = build_index(uri, str(tmp_path / "three"), IndexSpec(kind="flat"), shards=3)
    assert len(record["shards"]) == 3 and sum(s["rows"] for s in record["shards"]) == 3000
    one = LocalizationIndex.load(str(tmp_path / "one")).search(q, 5)
    three = LocalizationIndex.load(str(tmp_path / "three")).search(q, 5)
    assert [[m.id for m in a] for a in one] == [[m.id for m in b] for b in three]


def test_index_on_s3_and_another_models_descriptors_refused(database, s3_uri):
    uri, _, q, _ = database
    out = f"{s3_uri}/indexes/a"
    build_index(uri, out, IndexSpec(kind="flat"))
    assert len(LocalizationIndex.load(out, expected_model_hash="modelA").search(q[:2], 3)[0]) == 3
    with pytest.raises(ModelMismatchError, match="model modelA, not of model modelB"):
        LocalizationIndex.load(out, expected_model_hash="modelB")
    with pytest.raises(ValueError, match="memory-mapped from a local index folder"):
        build_index(uri, f"{s3_uri}/indexes/b", IndexSpec(kind="ivfpq", nlist=16, pq_m=4, rerank=10))


def test_ivfpq_spec_defaults_and_errors():
    spec = IndexSpec(kind="ivfpq").resolved(4096, 1_000_000)
    assert spec.nlist == 4096 and spec.pq_m == 256 and spec.train_size == 262_144
    assert spec.bytes_per_vector(4096) == 264
    with pytest.raises(ValueError, match="pq_m: 7 does not divide"):
        IndexSpec(kind="ivfpq", pq_m=7).resolved(64, 10_000)
    with pytest.raises(ValueError, match="nlist"):
        IndexSpec(kind="ivfpq", nlist=512).resolved(64, 100)
    with pytest.raises(ValueError, match="apply to kind ivfpq"):
        IndexSpec(kind="flat", nlist=4)


def test_position_is_the_weighted_centre_of_the_densest_group():
    utm = np.array([[0, 0], [300, 300], [6, 0], [0, 8], [1000, 0]], float)
    distances = np.array([0.50, 0.51, 0.55, 0.60, 0.90])
    estimate = estimate_position(utm, distances, radius=25)
    w = match_weights(distances)
    group = [0, 2, 3]
    centre = (w[group, None] * utm[group]).sum(0) / w[group].sum()
    assert estimate.members == group
    assert (estimate.east, estimate.north) == pytest.approx(tuple(centre))
    assert estimate.support == pytest.approx(w[group].sum())
    spread = np.sqrt((w[group] / w[group].sum() * ((utm[group] - centre) ** 2).sum(1)).sum())
    assert estimate.spread == pytest.approx(spread)
    assert estimate_position(np.zeros((0, 2)), np.zeros(0)) is None


def test_ivfpq_adds_in_blocks_bounded_by_the_workspace_and_equal_to_one_add(database):
    """FAISS's IVF-PQ encoder allocates n x pq_m x 256 floats per add call: the store's batches are fed to it
    in blocks that keep that under the workspace, and the blocks encode exactly what one call would."""
    from sare_core.index.faiss_index import add, add_rows_per_call, new_index, train

    _, db, q, _ = database
    spec = IndexSpec(kind="ivfpq", nlist=16, pq_m=8, nprobe=16, train_size=3000).resolved(DIM, len(db))
    whole, blocked = new_index(spec, DIM), new_index(spec, DIM)
    train(whole, db)
    train(blocked, db)
    workspace = 300 * (4 * 8 * 256 + 8 * DIM)  # room for 300 vectors' tables per call
    assert add_rows_per_call(blocked, workspace) == 300
    assert add_rows_per_call(new_index(IndexSpec(kind="ivfpq", pq_m=256, nlist=1024).resolved(4096, 10**6), 4096)) \
        <= (256 << 20) // (4 * 256 * 256)
    whole.add(db)
    add(blocked, db, workspace_bytes=workspace)
    assert blocked.ntotal == whole.ntotal == len(db)
    for index in (whole, blocked):
        index.nprobe = 16
    d_whole, i_whole = whole.search(q, 10)
    d_blocked, i_blocked = blocked.search(q, 10)
    np.testing.assert_array_equal(i_whole, i_blocked)
    np.testing.assert_array_equal(d_whole, d_blocked)
