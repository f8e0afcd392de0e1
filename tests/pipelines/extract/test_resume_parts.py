"""Adopting and deleting the parts an interrupted extraction left behind, without Ray."""

import numpy as np
import pytest

from pipelines.extract.resume import delete_parts_of_run, inspect_store
from sare_core.store import PartWriter, StoreMetadata, commit, open_store


def _write(uri, metadata, ids, task_id="t"):
    writer = PartWriter(uri, metadata, task_id=task_id)
    return writer.write(ids=ids, roles="database", descriptors=np.ones((len(ids), 4), np.float32))


def test_adoption_keeps_disjoint_parts_and_deletes_repeats_and_strangers(tmp_path):
    uri = str(tmp_path / "store")
    meta = StoreMetadata(dim=4, dataset="d", model_hash="m1")
    committed = _write(uri, meta, ["a", "b"])
    commit(uri, [committed], meta)
    _write(uri, meta, ["c", "d"])                  # a dead run's parts: one adopted, the other repeats "d"
    _write(uri, meta, ["d", "e"])                  # (as after a retried task) and is deleted
    _write(uri, meta, ["b", "f"])                  # repeats a committed id: deleted
    stranger = _write(uri, StoreMetadata(dim=4, dataset="d", model_hash="other"), ["g"])  # another model
    state = inspect_store(uri, meta)
    assert state.committed and state.done_ids == {"a", "b"}
    assert len(state.adopted) == 1 and state.adopted_ids in ({"c", "d"}, {"d", "e"})
    assert stranger.name in state.deleted and len(state.deleted) == 3
    assert state.skip_ids == {"a", "b"} | state.adopted_ids  # the others ("f", ...) are extracted again
    with pytest.raises(ValueError, match="other settings"):
        inspect_store(uri, StoreMetadata(dim=4, dataset="d", model_hash="m2"))
    assert open_store(uri).ids().tolist() == ["a", "b"]


def test_a_run_deletes_only_its_own_leftover_parts(tmp_path):
    uri = str(tmp_path / "store")
    meta = StoreMetadata(dim=4, dataset="d", model_hash="m1")
    mine = _write(uri, meta, ["a"], task_id="run1")
    other = _write(uri, meta, ["b"], task_id="run2")
    assert delete_parts_of_run(uri, "run1") == [mine.name]
    assert (tmp_path / "store" / other.name).exists()
