"""Local stores: exact round trips, float16, metadata, failures, streaming reads, filters, validation."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pyarrow as pa
import pytest

from sare_core.store import (
    DescriptorStore,
    PartWriter,
    StoreMetadata,
    commit,
    open_store,
    write_store,
)

from .rows import DIM, by_id, make_metadata, make_rows


def assert_same_rows(batch, rows, atol=0.0):
    """The batch holds exactly `rows` (any order), descriptors within atol."""
    assert sorted(batch.ids) == sorted(rows.ids)
    got = by_id(batch.ids, batch.roles, batch.splits, batch.utm, batch.labels, batch.descriptors)
    want = by_id(rows.ids, rows.roles, rows.splits, rows.utm, rows.labels, rows.descriptors)
    for g, w in zip(got[:2], want[:2], strict=True):
        assert list(g) == list(w)
    np.testing.assert_array_equal(got[2], want[2])  # NaN where NaN
    np.testing.assert_array_equal(got[3], want[3])
    if atol == 0:
        np.testing.assert_array_equal(got[4], want[4])
    else:
        np.testing.assert_allclose(got[4], want[4], atol=atol, rtol=0)


def test_float32_round_trip_is_exact(tmp_path):
    rows = make_rows(230)
    store = write_store(tmp_path / "store", make_metadata(), rows_per_part=64, **rows.write_kwargs())
    assert len(store.parts) == 4 and store.version == 1
    batch = store.read()
    assert batch.descriptors.dtype == np.float32 and batch.descriptors.shape == (230, DIM)
    assert batch.descriptors.flags.c_contiguous
    assert batch.utm.shape == (230, 2) and batch.utm.dtype == np.float64
    assert batch.labels.dtype == np.int64
    assert_same_rows(batch, rows)


def test_float16_round_trip_within_tolerance(tmp_path):
    rows = make_rows(100, seed=1)
    store = write_store(tmp_path / "half", make_metadata(dtype="float16"), **rows.write_kwargs())
    assert store.dtype == "float16"
    schema = store.read_arrow().schema
    assert schema.field("descriptor").type.value_type == pa.float16()
    batch = store.read()
    assert batch.descriptors.dtype == np.float32 and batch.descriptors.flags.c_contiguous
    assert_same_rows(batch, rows, atol=1e-3)


def test_float16_overflow_is_rejected(tmp_path):
    writer = PartWriter(tmp_path / "s", make_metadata(dim=2, dtype="float16"))
    with pytest.raises(ValueError, match="finite in float16"):
        writer.write(ids=["a"], roles="database", descriptors=np.array([[1e6, 0.0]]))


def test_metadata_round_trip(tmp_path):
    metadata = make_metadata(provenance={"config": {"lr": 0.001, "epochs": 3}, "seeds": [1, 2]})
    store = write_store(tmp_path / "s", metadata, **make_rows(10).write_kwargs())
    reopened = open_store(tmp_path / "s")
    assert reopened.metadata == metadata
    assert reopened.metadata.model_config == {"backbone": "vgg16", "num_clusters": 64, "layers": [1, 2]}
    assert reopened.metadata.provenance["config"]["lr"] == 0.001
    assert reopened.metadata.created_at == metadata.created_at and "T" in metadata.created_at
    assert reopened.metadata.git_revision == metadata.git_revision
    assert store.manifest.history[0].version == 1 and store.manifest.history[0].rows_added == 10
    # Every part's Parquet footer carries the metadata too.
    import pyarrow.parquet as pq

    footer = pq.read_schema(tmp_path / "s" / store.parts[0].name).metadata
    assert b"0123456789abcdef" in footer[b"sare.store.metadata"]


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="provenance"):
        StoreMetadata(dim=4, provenance={"f": object()})
    with pytest.raises(ValueError, match="dtype"):
        StoreMetadata(dim=4, dtype="float64")
    with pytest.raises(ValueError, match="dim"):
        StoreMetadata(dim=0)


def test_failures_round_trip(tmp_path):
    failures = [("bad/1.jpg", "/data/bad/1.jpg", "cannot identify image file"),
                ("bad/2.jpg", "s3://b/bad/2.jpg", "truncated: 12 bytes")]
    store = write_store(tmp_path / "s", make_metadata(), failures=failures, **make_rows(5).write_kwargs())
    table = store.failures()
    assert table.column_names == ["id", "path", "error"]
    assert sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)) == failures
    assert sorted(store.failed_ids()) == ["bad/1.jpg", "bad/2.jpg"]
    assert store.manifest.num_failures == 2 and store.num_rows() == 5


def test_store_without_failures_has_an_empty_failures_table(tmp_path):
    store = write_store(tmp_path / "s", make_metadata(), **make_rows(5).write_kwargs())
    assert store.failures().num_rows == 0 and store.failures().column_names == ["id", "path", "error"]


def test_streaming_small_batches_yield_every_row_once(tmp_path):
    rows = make_rows(203)
    store = write_store(tmp_path / "s", make_metadata(), rows_per_part=50, **rows.write_kwargs())
    batches = list(store.iter_batches(batch_size=16))
    assert [len(b) for b in batches] == [16] * 12 + [11]  # regrouped across part boundaries
    ids = np.concatenate([b.ids for b in batches])
    descriptors = np.concatenate([b.descriptors for b in batches])
    assert len(set(ids)) == 203
    (sorted_desc,) = by_id(ids, descriptors)
    (want,) = by_id(rows.ids, rows.descriptors)
    np.testing.assert_array_equal(sorted_desc, want)
    assert all(b.descriptors.flags.c_contiguous and b.descriptors.dtype == np.float32 for b in batches)


def test_default_batches_hold_about_64_mib_of_descriptors(tmp_path, monkeypatch):
    """Without a batch size, wide descriptors come in fewer rows per batch (a 1M x 4096 store read in
    65,536-row batches held 1 GiB per batch and several at once)."""
    from sare_core.store import StoreMetadata, reader
    from sare_core.store.reader import default_batch_rows

    assert default_batch_rows(StoreMetadata(dim=256)) == 65536
    assert default_batch_rows(StoreMetadata(dim=4096)) == 4096
    assert default_batch_rows(StoreMetadata(dim=4096, dtype="float16")) == 8192
    assert default_batch_rows(StoreMetadata(dim=1 << 20)) == 1024
    monkeypatch.setattr(reader, "DEFAULT_BATCH_BYTES", 1 << 20)  # 1,024 rows of 256 float32 dims per batch
    rng = np.random.default_rng(0)
    store = write_store(tmp_path / "s", StoreMetadata(dim=256), ids=[f"i{n}" for n in range(2500)], roles="database",
                        descriptors=rng.standard_normal((2500, 256)).astype(np.float32), rows_per_part=900)
    assert [len(b) for b in store.iter_batches()] == [1024, 1024, 452]
    with pytest.raises(ValueError, match="batch_size"):
        list(store.iter_batches(batch_size=0))


def test_filters_by_role_and_split_and_counts_from_manifest(tmp_path):
    rows = make_rows(120)
    store = write_store(tmp_path / "s", make_metadata(), rows_per_part=40, **rows.write_kwargs())
    roles, splits = np.array(rows.roles), np.array(rows.splits)
    for role in ("database", "query"):
        assert store.num_rows(role) == int((roles == role).sum())
        for split in ("train", "val", "test", "nope"):
            want = {i for i, r, s in zip(rows.ids, roles, splits, strict=True) if r == role and s == split}
            got = np.concatenate([b.ids for b in store.iter_batches(role=role, split=split, batch_size=7)]
                                 or [np.array([], dtype=object)])
            assert set(got) == want and len(got) == len(want)
            assert store.num_rows(role, split) == len(want)
    # Counts come from the manifest alone: they survive the data being gone.
    for part in store.parts:
        (tmp_path / "s" / part.name).unlink()
    assert open_store(tmp_path / "s", verify=False).num_rows("query") == int((roles == "query").sum())


def test_role_homogeneous_parts_are_skipped(tmp_path):
    rows = make_rows(60)
    metadata = make_metadata()
    writer = PartWriter(tmp_path / "s", metadata, task_id="t")
    db = [i for i, r in enumerate(rows.roles) if r == "database"]
    q = [i for i, r in enumerate(rows.roles) if r == "query"]
    writer.write(ids=[rows.ids[i] for i in db], roles="database", descriptors=rows.descriptors[db])
    writer.write(ids=[rows.ids[i] for i in q], roles="query", descriptors=rows.descriptors[q])
    commit(tmp_path / "s", writer.parts, metadata)
    (tmp_path / "s" / writer.parts[0].name).write_bytes(b"x" * writer.parts[0].size_bytes)  # spoil db part
    store = open_store(tmp_path / "s")
    batch = store.read(role="query")  # never opens the database part
    assert sorted(batch.ids) == sorted(rows.ids[i] for i in q)
    assert np.isnan(batch.utm).all() and (batch.labels == -1).all() and set(batch.splits) == {""}


def test_column_selection(tmp_path):
    store = write_store(tmp_path / "s", make_metadata(), **make_rows(30).write_kwargs())
    batch = store.read(role="database", columns=["id"])
    assert batch.descriptors is None and batch.roles is None and len(batch) == store.num_rows("database")
    batch = store.read(columns=["descriptor", "id"])
    assert batch.descriptors.shape == (30, DIM) and batch.utm is None
    table = store.read_arrow(role="query", columns=["label", "id"])
    assert table.column_names == ["id", "label"]
    with pytest.raises(ValueError, match="unknown columns"):
        store.read(columns=["vector"])


def test_empty_selection_has_the_right_shapes(tmp_path):
    rows = make_rows(10)
    store = write_store(tmp_path / "s", make_metadata(), ids=rows.ids, roles="database",
                        descriptors=rows.descriptors)
    batch = store.read(role="query")
    assert len(batch) == 0 and batch.descriptors.shape == (0, DIM) and batch.utm.shape == (0, 2)
    assert list(store.iter_batches(role="query")) == []


def test_reading_some_parts_for_sharding(tmp_path):
    rows = make_rows(90)
    store = write_store(tmp_path / "s", make_metadata(), rows_per_part=30, **rows.write_kwargs())
    names = [p.name for p in store.parts]
    all_ids = store.ids_arrow().to_pylist()
    first = [i for b in store.iter_batches(parts=names[:1], batch_size=1000) for i in b.ids]
    rest = [i for b in store.iter_batches(parts=names[1:], batch_size=1000) for i in b.ids]
    assert len(first) == 30 and sorted(first + rest) == sorted(all_ids) == sorted(rows.ids)
    with pytest.raises(ValueError, match="not committed"):
        list(store.iter_batches(parts=["part-x-00000.parquet"]))
    clone = pickle.loads(pickle.dumps(store))
    assert isinstance(clone, DescriptorStore) and sorted(clone.ids()) == sorted(rows.ids)


def test_writer_rejects_bad_rows(tmp_path):
    writer = PartWriter(tmp_path / "s", make_metadata(dim=4))
    ok = {"ids": ["a", "b"], "roles": "database", "descriptors": np.zeros((2, 4))}
    cases = [
        ({"descriptors": np.zeros((2, 5))}, "shape"),
        ({"descriptors": np.array([[0, 0, 0, np.nan], [0, 0, 0, 0]])}, "finite"),
        ({"roles": ["database", "train"]}, "roles"),
        ({"ids": ["a", "a"]}, "repeat"),
        ({"ids": ["a", ""]}, "non-empty"),
        ({"ids": [1, 2]}, "strings"),
        ({"utm": np.zeros((2, 3))}, "utm"),
        ({"labels": [0.5, 1.5]}, "labels"),
        ({"splits": ["train"]}, "splits"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            writer.write(**{**ok, **change})
    assert writer.parts == [] and not any(p.suffix == ".parquet" for p in (tmp_path / "s").glob("*"))


def test_uris_as_paths_and_file_urls_and_moved_stores(tmp_path):
    rows = make_rows(12)
    write_store(f"file://{tmp_path}/a", make_metadata(), **rows.write_kwargs())
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # parts are named relative to the root
    store = open_store(str(tmp_path / "b"))
    assert store.uri == str(tmp_path / "b") and sorted(store.ids()) == sorted(rows.ids)


def test_descriptor_conversion_does_not_copy_float32():
    from sare_core.store.schema import descriptors_from_arrow, descriptors_to_arrow

    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    column = descriptors_to_arrow(x, 4, "float32").slice(2, 3)  # an offset, as in a sliced batch
    matrix = descriptors_from_arrow(column)
    np.testing.assert_array_equal(matrix, x[2:5])
    values = column.flatten()
    assert matrix.ctypes.data == values.buffers()[1].address + values.offset * 4  # a view of Arrow memory
    assert not matrix.flags.owndata and matrix.flags.c_contiguous
