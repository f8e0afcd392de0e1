"""The same store on S3: a real S3 endpoint (moto's server) on loopback, reached through AWS_ENDPOINT_URL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sare_core.store import (
    MANIFEST_NAME,
    DuplicateIdsError,
    PartWriter,
    StoreCorruptError,
    StoreMetadata,
    StoreNotCommittedError,
    commit,
    commit_update,
    find_uncommitted_parts,
    open_store,
    redact_uri,
    write_store,
)

from .crash_writer import METADATA
from .rows import by_id, make_metadata, make_rows
from .test_store_crash import run_killed_writer


def test_round_trip_on_s3(s3_uri):
    uri = f"{s3_uri}/stores/pitts"
    rows = make_rows(150)
    failures = [("bad.jpg", f"{s3_uri}/images/bad.jpg", "cannot identify image file")]
    metadata = make_metadata()
    store = write_store(uri, metadata, rows_per_part=40, failures=failures, **rows.write_kwargs())
    assert store.uri == uri and len(store.parts) == 4
    store = open_store(uri)  # environment only: AWS_ENDPOINT_URL names the loopback server
    assert store.metadata == metadata and store.num_rows("query") == rows.roles.count("query")
    batches = list(store.iter_batches(batch_size=32))
    assert [len(b) for b in batches] == [32] * 4 + [22]
    ids = np.concatenate([b.ids for b in batches])
    got, = by_id(ids, np.concatenate([b.descriptors for b in batches]))
    want, = by_id(rows.ids, rows.descriptors)
    np.testing.assert_array_equal(got, want)
    query = store.read(role="query", split="val")
    assert set(query.ids) == {i for i, r, s in zip(rows.ids, rows.roles, rows.splits, strict=True)
                              if r == "query" and s == "val"}
    assert store.failures().to_pylist() == [dict(zip(("id", "path", "error"), failures[0], strict=True))]


def test_float16_on_s3_with_explicit_storage_options(s3_server, s3_uri, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    rows = make_rows(40, seed=3)
    options = s3_server.storage_options
    write_store(f"{s3_uri}/half", make_metadata(dtype="float16"), storage_options=options, **rows.write_kwargs())
    batch = open_store(f"{s3_uri}/half", storage_options=options).read()
    got, = by_id(batch.ids, batch.descriptors)
    want, = by_id(rows.ids, rows.descriptors)
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_incremental_commit_and_duplicates_on_s3(s3_uri):
    uri, metadata, rows = f"{s3_uri}/inc", make_metadata(), make_rows(60)
    first = [PartWriter(uri, metadata, task_id=str(k)).write(**rows.slice(20 * k, 20 * k + 20).write_kwargs())
             for k in range(2)]
    commit(uri, first, metadata)
    assert set(open_store(uri).ids()) == set(rows.ids[:40])
    writer = PartWriter(uri, metadata, task_id="resume")
    overlapping = writer.write(**rows.slice(35, 45).write_kwargs())
    with pytest.raises(DuplicateIdsError, match=uri):
        commit_update(uri, [overlapping])
    fresh = writer.write(**rows.slice(40, 60).write_kwargs())
    manifest = commit_update(uri, [fresh], expected_version=1)
    store = open_store(uri)
    assert manifest.version == store.version == 2
    assert sorted(store.ids()) == sorted(rows.ids) and store.num_rows() == 60
    assert [p.name for p in find_uncommitted_parts(uri)] == [overlapping.name]


def test_writer_killed_before_commit_on_s3(s3_uri):
    uri = f"{s3_uri}/crash"
    names = run_killed_writer(uri, "before-commit")
    with pytest.raises(StoreNotCommittedError, match="not committed") as error:
        open_store(uri)
    assert uri in str(error.value)
    found = find_uncommitted_parts(uri)
    assert sorted(p.name for p in found) == sorted(names)
    commit(uri, found, StoreMetadata(**METADATA))
    assert open_store(uri).num_rows() == 100


def test_malformed_store_on_s3(s3_server, s3_uri):
    uri = f"{s3_uri}/bad"
    store = write_store(uri, make_metadata(), rows_per_part=10, **make_rows(20).write_kwargs())
    bucket, prefix = uri[len("s3://"):].split("/", 1)
    client = s3_server.client()
    client.delete_object(Bucket=bucket, Key=f"{prefix}/{store.parts[0].name}")
    with pytest.raises(StoreCorruptError, match="missing") as error:
        open_store(uri)
    assert uri in str(error.value)
    client.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}", Body=b"{not json")
    with pytest.raises(StoreCorruptError, match="not valid JSON") as error:
        open_store(uri)
    assert f"{uri}/{MANIFEST_NAME}" in str(error.value)


def test_credentials_never_appear_in_messages(s3_server, s3_uri):
    secret = "sUpErSeCrEtKeY0123456789"
    options = {**s3_server.storage_options, "secret": secret, "key": "AKIAEXAMPLEKEYID"}
    uri = f"{s3_uri}/secret-store"
    with pytest.raises(StoreNotCommittedError) as error:
        open_store(uri, storage_options=options)
    store = write_store(uri, make_metadata(), storage_options=options, **make_rows(5).write_kwargs())
    texts = [str(error.value), repr(store), repr(store.location), json.dumps(store.manifest.metadata.to_dict())]
    assert not any(secret in t or "AKIAEXAMPLEKEYID" in t for t in texts)
    assert redact_uri("s3://AKIA:secret@bucket/prefix?X-Amz-Signature=abc") == "s3://bucket/prefix"
    assert redact_uri("/local/path") == "/local/path"
