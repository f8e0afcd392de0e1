"""Crash safety: a writer killed (SIGKILL) at any point leaves nothing that a reader trusts."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sare_core.store import (
    MANIFEST_NAME,
    PartWriter,
    StoreMetadata,
    StoreNotCommittedError,
    commit,
    delete_uncommitted_files,
    find_uncommitted_parts,
    open_store,
)

from .crash_writer import METADATA
from .rows import make_metadata, make_rows

REPO_ROOT = Path(__file__).resolve().parents[3]


def run_killed_writer(uri: str, mode: str) -> list[str]:
    """Run crash_writer in a subprocess, check it died by SIGKILL, return the names of its first parts."""
    result = subprocess.run([sys.executable, "-m", "tests.sare_core.store.crash_writer", uri, mode],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    return result.stdout.split()


def test_writer_killed_before_commit_leaves_no_store(tmp_path):
    uri = str(tmp_path / "store")
    names = run_killed_writer(uri, "before-commit")
    assert all((tmp_path / "store" / name).is_file() for name in names)
    with pytest.raises(StoreNotCommittedError, match="not committed") as error:
        open_store(uri)
    assert uri in str(error.value)


def test_writer_killed_mid_part_leaves_only_whole_parts(tmp_path):
    uri = str(tmp_path / "store")
    names = run_killed_writer(uri, "mid-part")
    leftovers = sorted(p.name for p in (tmp_path / "store").iterdir())
    temps = [n for n in leftovers if n.endswith(".tmp")]
    assert len(temps) == 1 and len(leftovers) == 3  # two whole parts and the third one's temporary file
    with pytest.raises(StoreNotCommittedError):
        open_store(uri)
    # A resumed run may adopt the whole parts: they are found, checked and committed.
    found = find_uncommitted_parts(uri)
    assert sorted(p.name for p in found) == sorted(names)
    commit(uri, found, StoreMetadata(**METADATA))
    store = open_store(uri)
    assert store.num_rows() == 100 and sorted(store.ids()) == sorted(f"w{k}-{i}" for k in (0, 1) for i in range(50))
    assert delete_uncommitted_files(uri) == temps


def test_writer_killed_mid_update_leaves_the_previous_version(tmp_path):
    uri = str(tmp_path / "store")
    run_killed_writer(uri, "mid-update")
    store = open_store(uri)
    assert store.version == 1 and store.num_rows() == 100
    assert not any(i.startswith("w2-") for i in store.ids())
    assert any(n.startswith(f".{MANIFEST_NAME}") for n in (p.name for p in (tmp_path / "store").iterdir()))
    assert [p.num_rows for p in find_uncommitted_parts(uri)] == [50]


def test_abandoned_writer_object_leaves_no_store(tmp_path):
    uri = tmp_path / "store"
    writer = PartWriter(uri, make_metadata(), task_id="abandoned")
    writer.write(**make_rows(20).write_kwargs())
    del writer
    with pytest.raises(StoreNotCommittedError, match="not committed"):
        open_store(uri)
