"""Commits: parts from many tasks, incremental updates, duplicate ids, incompatible parts, leftovers."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from sare_core.store import (
    MANIFEST_NAME,
    DuplicateIdsError,
    IncompatiblePartError,
    PartInfo,
    PartWriter,
    StoreError,
    StoreExistsError,
    StoreNotCommittedError,
    StoreVersionConflictError,
    commit,
    commit_update,
    delete_uncommitted_files,
    find_uncommitted_parts,
    open_store,
)

from .rows import make_metadata, make_rows


def write_tasks(uri, metadata, rows, tasks: int, parts_per_task: int = 2) -> list[PartInfo]:
    """Write `rows` as `tasks` independent writers would, each several parts; returns all PartInfos."""
    chunks = np.array_split(np.arange(len(rows)), tasks * parts_per_task)
    infos = []
    for task in range(tasks):
        writer = PartWriter(uri, metadata, task_id=f"task {task}")
        for chunk in chunks[task * parts_per_task:(task + 1) * parts_per_task]:
            infos.append(writer.write(**rows.slice(int(chunk[0]), int(chunk[-1]) + 1).write_kwargs()))
            assert infos[-1].name.startswith("part-task_")
    return infos


def test_parts_from_several_tasks_commit_together(tmp_path):
    uri, metadata, rows = tmp_path / "s", make_metadata(), make_rows(100)
    parts = write_tasks(uri, metadata, rows, tasks=3)
    assert len({p.name for p in parts}) == 6
    parts = [pickle.loads(pickle.dumps(p)) for p in parts]  # as a Ray task would hand them back
    with pytest.raises(StoreNotCommittedError):
        open_store(uri)
    manifest = commit(uri, parts, metadata)
    assert manifest.version == 1 and manifest.num_rows() == 100
    store = open_store(uri)
    assert sorted(store.ids()) == sorted(rows.ids)
    assert store.num_rows("query") == rows.roles.count("query")


def test_commit_accepts_part_names(tmp_path):
    uri, metadata = tmp_path / "s", make_metadata()
    part = PartWriter(uri, metadata).write(**make_rows(10).write_kwargs())
    commit(uri, [part.name], metadata)
    assert open_store(uri).parts[0] == part


def test_second_first_commit_is_refused(tmp_path):
    uri, metadata = tmp_path / "s", make_metadata()
    commit(uri, [PartWriter(uri, metadata).write(**make_rows(5).write_kwargs())], metadata)
    with pytest.raises(StoreExistsError, match="commit_update"):
        commit(uri, [], metadata)


def test_incremental_commit_adds_parts_without_duplicates(tmp_path):
    uri, metadata, rows = tmp_path / "s", make_metadata(), make_rows(80)
    first = write_tasks(uri, metadata, rows.slice(0, 50), tasks=2, parts_per_task=1)
    commit(uri, first, metadata)
    old = open_store(uri)
    done = set(old.ids())
    todo = [i for i, id_ in enumerate(rows.ids) if id_ not in done]  # what a resumed run computes
    assert todo == list(range(50, 80))
    writer = PartWriter(uri, make_metadata(provenance={"run": "resume"}), task_id="resume")
    writer.write(**rows.slice(50, 80).write_kwargs())
    writer.write_failures(["broken.jpg"], ["/x/broken.jpg"], ["OSError: truncated"])
    manifest = commit_update(uri, writer.parts, expected_version=1, provenance={"resumed": True})
    assert manifest.version == 2 and [r.version for r in manifest.history] == [1, 2]
    assert manifest.history[1].rows_added == 30 and manifest.history[1].provenance == {"resumed": True}
    new = open_store(uri)
    ids = new.ids()
    assert len(ids) == len(set(ids)) == 80 and sorted(ids) == sorted(rows.ids)
    assert new.num_rows() == 80 and new.failures().num_rows == 1
    assert new.metadata == metadata  # the store keeps its first metadata
    assert len(old.ids()) == 50  # an open store reads the version it opened


def test_duplicate_ids_across_tasks_are_rejected(tmp_path):
    uri, metadata, rows = tmp_path / "s", make_metadata(), make_rows(30)
    a = PartWriter(uri, metadata).write(**rows.slice(0, 20).write_kwargs())
    b = PartWriter(uri, metadata).write(**rows.slice(15, 30).write_kwargs())
    with pytest.raises(DuplicateIdsError, match="5 ids") as error:
        commit(uri, [a, b], metadata)
    assert error.value.examples == rows.ids[15:20] and error.value.count == 5
    assert rows.ids[15] in str(error.value) and str(uri) in str(error.value)
    assert not (uri / MANIFEST_NAME).exists()


def test_duplicate_ids_against_committed_rows_are_rejected(tmp_path):
    uri, metadata, rows = tmp_path / "s", make_metadata(), make_rows(30)
    commit(uri, [PartWriter(uri, metadata).write(**rows.slice(0, 20).write_kwargs())], metadata)
    again = PartWriter(uri, metadata).write(**rows.slice(19, 30).write_kwargs())
    before = (uri / MANIFEST_NAME).read_bytes()
    with pytest.raises(DuplicateIdsError, match=rows.ids[19].replace(".", r"\.")):
        commit_update(uri, [again])
    assert (uri / MANIFEST_NAME).read_bytes() == before


def test_a_committed_part_cannot_be_committed_again(tmp_path):
    uri, metadata = tmp_path / "s", make_metadata()
    part = PartWriter(uri, metadata).write(**make_rows(5).write_kwargs())
    commit(uri, [part], metadata)
    with pytest.raises(StoreError, match="already committed"):
        commit_update(uri, [part])


def test_version_conflict(tmp_path):
    uri, metadata, rows = tmp_path / "s", make_metadata(), make_rows(20)
    commit(uri, [PartWriter(uri, metadata).write(**rows.slice(0, 10).write_kwargs())], metadata)
    commit_update(uri, [PartWriter(uri, metadata).write(**rows.slice(10, 15).write_kwargs())])
    late = PartWriter(uri, metadata).write(**rows.slice(15, 20).write_kwargs())
    with pytest.raises(StoreVersionConflictError, match="version 2"):
        commit_update(uri, [late], expected_version=1)


@pytest.mark.parametrize("change, message", [
    ({"dim": 8}, "dim"),
    ({"dtype": "float16"}, "dtype"),
    ({"model_hash": "ffffffffffffffff"}, "model_hash"),
    ({"dataset": "pitts30k"}, "dataset"),
])
def test_parts_of_another_store_are_rejected(tmp_path, change, message):
    uri, metadata = tmp_path / "s", make_metadata()
    other = make_metadata(**change)
    rows = make_rows(5, dim=other.dim)
    part = PartWriter(uri, other).write(**rows.write_kwargs())
    with pytest.raises(IncompatiblePartError, match=message):
        commit(uri, [part], metadata)


def test_reported_part_must_match_storage(tmp_path):
    uri, metadata = tmp_path / "s", make_metadata()
    part = PartWriter(uri, metadata).write(**make_rows(5).write_kwargs())
    forged = PartInfo(**{**part.to_dict(), "size_bytes": part.size_bytes + 1})
    with pytest.raises(StoreError, match="bytes"):
        commit(uri, [forged], metadata)
    with pytest.raises(StoreError, match="not found"):
        commit(uri, ["part-elsewhere-00000.parquet"], metadata)
    with pytest.raises(ValueError, match="more than once"):
        commit(uri, [part, part.name], metadata)


def test_uncommitted_parts_can_be_found_committed_or_deleted(tmp_path):
    uri, metadata, rows = tmp_path / "s", make_metadata(), make_rows(40)
    committed = PartWriter(uri, metadata).write(**rows.slice(0, 10).write_kwargs())
    commit(uri, [committed], metadata)
    lost = PartWriter(uri, metadata, task_id="lost")  # a task whose driver died before commit_update
    lost.write(**rows.slice(10, 25).write_kwargs())
    lost.write_failures(["f"], ["p"], ["e"])
    orphan = PartWriter(uri, metadata, task_id="orphan").write(**rows.slice(25, 40).write_kwargs())
    (uri / ".part-x.parquet.123.tmp").write_bytes(b"half a part")
    found = find_uncommitted_parts(uri)
    assert {p.name for p in found} == {p.name for p in lost.parts} | {orphan.name}
    assert {p.name: p for p in found}[orphan.name] == orphan
    commit_update(uri, lost.parts)
    assert open_store(uri).num_rows() == 25
    assert delete_uncommitted_files(uri) == sorted([".part-x.parquet.123.tmp", orphan.name])
    assert find_uncommitted_parts(uri) == [] and sorted(open_store(uri).ids()) == sorted(rows.ids[:25])


def test_manifest_is_readable_json_listing_parts(tmp_path):
    uri, metadata = tmp_path / "s", make_metadata()
    part = PartWriter(uri, metadata).write(**make_rows(9).write_kwargs())
    commit(uri, [part], metadata)
    document = json.loads((uri / MANIFEST_NAME).read_text())
    assert document["version"] == 1 and document["num_rows"] == 9
    assert document["parts"][0]["name"] == part.name and document["parts"][0]["num_rows"] == 9
    assert document["parts"][0]["size_bytes"] == (uri / part.name).stat().st_size
    assert document["metadata"]["dim"] == metadata.dim
    assert "fixed_size_list" in document["schema"]["descriptors"]["descriptor"]


def test_a_file_that_is_not_a_part_is_refused_and_skipped(tmp_path, caplog):
    uri, metadata = tmp_path / "s", make_metadata()
    uri.mkdir()
    (uri / "part-garbage-00000.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(IncompatiblePartError, match="unreadable"):
        commit(uri, ["part-garbage-00000.parquet"], metadata)
    assert find_uncommitted_parts(uri) == [] and "part-garbage" in caplog.text
