"""Stores that cannot be trusted fail loudly, naming the store's URI."""

from __future__ import annotations

import json

import pytest

from sare_core.store import MANIFEST_NAME, StoreCorruptError, StoreNotCommittedError, open_store, write_store

from .rows import make_metadata, make_rows


@pytest.fixture
def store_dir(tmp_path):
    write_store(tmp_path / "s", make_metadata(), rows_per_part=10, **make_rows(30).write_kwargs(),
                failures=[("x", "/x.jpg", "bad")])
    return tmp_path / "s"


def test_missing_store_is_not_committed(tmp_path):
    for uri in (tmp_path / "nothing", tmp_path):
        with pytest.raises(StoreNotCommittedError, match="not committed") as error:
            open_store(uri)
        assert str(uri) in str(error.value)


def test_manifest_listing_a_missing_part(store_dir):
    manifest = json.loads((store_dir / MANIFEST_NAME).read_text())
    (store_dir / manifest["parts"][1]["name"]).unlink()
    with pytest.raises(StoreCorruptError, match="missing") as error:
        open_store(store_dir)
    assert str(store_dir) in str(error.value) and manifest["parts"][1]["name"] in str(error.value)
    lazy = open_store(store_dir, verify=False)  # without the listing, the read fails instead
    with pytest.raises(StoreCorruptError, match="missing") as error:
        lazy.read()
    assert str(store_dir) in str(error.value)


def test_missing_failures_part(store_dir):
    manifest = json.loads((store_dir / MANIFEST_NAME).read_text())
    (store_dir / manifest["failures"][0]["name"]).unlink()
    with pytest.raises(StoreCorruptError, match="missing"):
        open_store(store_dir)


@pytest.mark.parametrize("content, message", [
    (b'{"format": "sare-descriptor-store", "version": 1, "parts": [', "not valid JSON"),
    (b"\xff\xfe garbage", "not valid JSON"),
    (b'{"hello": "world"}', "not a descriptor store manifest"),
    (b'{"format": "sare-descriptor-store", "version": 1}', "malformed manifest"),
    (b'{"format": "sare-descriptor-store", "format_version": 99}', "format version 99"),
])
def test_corrupt_manifest(store_dir, content, message):
    (store_dir / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(StoreCorruptError, match=message) as error:
        open_store(store_dir)
    assert str(store_dir / MANIFEST_NAME) in str(error.value)


def test_manifest_with_a_bad_part_entry(store_dir):
    manifest = json.loads((store_dir / MANIFEST_NAME).read_text())
    manifest["parts"][0]["name"] = "../elsewhere/part-a-00000.parquet"
    (store_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(StoreCorruptError, match="malformed manifest"):
        open_store(store_dir)


def test_part_changed_after_commit(store_dir):
    manifest = json.loads((store_dir / MANIFEST_NAME).read_text())
    part = store_dir / manifest["parts"][0]["name"]
    part.write_bytes(part.read_bytes() + b"tail")
    with pytest.raises(StoreCorruptError, match="changed since commit") as error:
        open_store(store_dir)
    assert str(store_dir) in str(error.value)


def test_part_garbled_in_place(store_dir):
    manifest = json.loads((store_dir / MANIFEST_NAME).read_text())
    part = store_dir / manifest["parts"][2]["name"]
    part.write_bytes(b"\0" * part.stat().st_size)
    store = open_store(store_dir)  # same size: only reading finds out
    with pytest.raises(StoreCorruptError, match="unreadable") as error:
        store.read()
    assert str(store_dir) in str(error.value)
