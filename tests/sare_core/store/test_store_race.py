"""Two writers racing on one store, locally and on S3 (moto's server, conditional PUTs): exactly one commit
wins, the other fails with a clear error, and nothing is lost (its parts stay, uncommitted, and commit on
a retry)."""

from __future__ import annotations

import threading

import pytest

from sare_core.store import (
    StoreExistsError,
    StoreVersionConflictError,
    commit,
    commit_update,
    find_uncommitted_parts,
    open_store,
)
from sare_core.store.location import StoreLocation

from .rows import make_metadata, make_rows
from .test_store_commit import write_tasks


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return f"{request.getfixturevalue('s3_uri')}/store"


def race(monkeypatch, first, second) -> list:
    """Run `first` and `second` in two threads that both reach their manifest write only after both have
    read the store (a barrier in front of the conditional write); [result or exception] of each."""
    barrier = threading.Barrier(2, timeout=60)
    original = StoreLocation.write_bytes_if

    def aligned(self, name, data, expected_tag):
        barrier.wait()
        return original(self, name, data, expected_tag)

    monkeypatch.setattr(StoreLocation, "write_bytes_if", aligned)
    outcomes: list = [None, None]

    def call(i, fn):
        try:
            outcomes[i] = fn()
        except Exception as error:  # noqa: BLE001 - the outcome under test
            outcomes[i] = error

    threads = [threading.Thread(target=call, args=(i, fn)) for i, fn in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    monkeypatch.setattr(StoreLocation, "write_bytes_if", original)
    return outcomes


def test_two_updates_racing_exactly_one_wins_nothing_lost(store_uri, monkeypatch):
    metadata = make_metadata()
    rows = make_rows(30)
    commit(store_uri, write_tasks(store_uri, metadata, rows.slice(0, 10), tasks=1, parts_per_task=1), metadata)
    parts_a = write_tasks(store_uri, metadata, rows.slice(10, 20), tasks=1, parts_per_task=1)
    parts_b = write_tasks(store_uri, metadata, rows.slice(20, 30), tasks=1, parts_per_task=1)
    a, b = race(monkeypatch, lambda: commit_update(store_uri, parts_a), lambda: commit_update(store_uri, parts_b))
    won = [o for o in (a, b) if not isinstance(o, Exception)]
    lost = [o for o in (a, b) if isinstance(o, Exception)]
    assert len(won) == 1 and len(lost) == 1, (a, b)
    assert isinstance(lost[0], StoreVersionConflictError)
    assert "another writer" in str(lost[0]) and "rerun to adopt" in str(lost[0])
    store = open_store(store_uri)
    assert store.version == 2 and len(store) == 20
    # Nothing lost: the loser's part is still there, uncommitted, and commits on a retry.
    leftover = find_uncommitted_parts(store_uri)
    loser_parts = parts_b if won[0].parts[-1].name == parts_a[0].name else parts_a
    assert [p.name for p in leftover] == [p.name for p in loser_parts]
    commit_update(store_uri, leftover)
    assert len(open_store(store_uri)) == 30 and sorted(open_store(store_uri).ids()) == sorted(rows.ids)


def test_two_first_commits_racing_exactly_one_wins(store_uri, monkeypatch):
    metadata = make_metadata()
    rows = make_rows(20)
    parts_a = write_tasks(store_uri, metadata, rows.slice(0, 10), tasks=1, parts_per_task=1)
    parts_b = write_tasks(store_uri, metadata, rows.slice(10, 20), tasks=1, parts_per_task=1)
    a, b = race(monkeypatch, lambda: commit(store_uri, parts_a, metadata), lambda: commit(store_uri, parts_b, metadata))
    lost = [o for o in (a, b) if isinstance(o, Exception)]
    assert len(lost) == 1 and isinstance(lost[0], StoreExistsError) and "another writer" in str(lost[0])
    store = open_store(store_uri)
    assert store.version == 1 and len(store) == 10
    assert len(find_uncommitted_parts(store_uri)) == 1  # the loser's part, kept


def test_an_update_on_a_stale_read_is_refused(store_uri):
    """Without threads: a writer whose read is older than the store's current manifest cannot commit."""
    metadata = make_metadata()
    rows = make_rows(30)
    commit(store_uri, write_tasks(store_uri, metadata, rows.slice(0, 10), tasks=1, parts_per_task=1), metadata)
    location = StoreLocation.from_uri(store_uri)
    stale = location.tag("_store.json")
    commit_update(store_uri, write_tasks(store_uri, metadata, rows.slice(10, 20), tasks=1, parts_per_task=1))
    assert location.tag("_store.json") != stale
    assert location.write_bytes_if("_store.json", b"{}", stale) is False
    assert location.write_bytes_if("_store.json", b"{}", None) is False  # exists: no blind create either
    assert open_store(store_uri).version == 2
