"""The Parquet descriptor store: how every pipeline stage hands descriptors to the next.

A store is a directory (local path or s3://bucket/prefix) of immutable Parquet parts plus a manifest,
`_store.json`, written last and atomically; only parts the manifest lists exist for readers.

    metadata = StoreMetadata(dim=4096, dtype="float32", dataset="pitts30k", model_hash=..., model_config=...)
    writer = PartWriter(uri, metadata, task_id="block-3")            # in each task
    writer.write(ids=ids, roles="database", descriptors=x, utm=utm)  # -> PartInfo, one part per call
    manifest = commit(uri, all_parts, metadata)                     # on the driver, once: version 1
    commit_update(uri, more_parts)                                  # later: version 2 (resume, extend)
    store = open_store(uri)
    for batch in store.iter_batches(role="database", batch_size=65536):
        batch.ids, batch.descriptors                                 # (n,), (n, D) float32

Modules: location (local/S3 file access, atomic writes), metadata (StoreMetadata), schema (columns and
numpy <-> Arrow), manifest (the committed state), parts (Parquet part files), writer (PartWriter,
write_store), commit (commit, commit_update, uncommitted parts), reader (DescriptorStore), errors.
"""

from .commit import clear_store, commit, commit_update, delete_uncommitted_files, find_uncommitted_parts
from .errors import (
    DuplicateIdsError,
    IncompatiblePartError,
    StoreCorruptError,
    StoreError,
    StoreExistsError,
    StoreNotCommittedError,
    StoreVersionConflictError,
)
from .location import StoreLocation, redact_uri
from .manifest import MANIFEST_NAME, CommitRecord, Manifest, PartInfo
from .metadata import DESCRIPTOR_DTYPES, StoreMetadata, detect_git_revision
from .reader import DescriptorBatch, DescriptorStore, open_store
from .schema import DESCRIPTOR_COLUMNS, FAILURE_COLUMNS, NO_LABEL, ROLES, descriptor_schema
from .writer import PartWriter, write_store

__all__ = [
    "DESCRIPTOR_COLUMNS",
    "DESCRIPTOR_DTYPES",
    "FAILURE_COLUMNS",
    "MANIFEST_NAME",
    "NO_LABEL",
    "ROLES",
    "CommitRecord",
    "DescriptorBatch",
    "DescriptorStore",
    "DuplicateIdsError",
    "IncompatiblePartError",
    "Manifest",
    "PartInfo",
    "PartWriter",
    "StoreCorruptError",
    "StoreError",
    "StoreExistsError",
    "StoreLocation",
    "StoreMetadata",
    "StoreNotCommittedError",
    "StoreVersionConflictError",
    "clear_store",
    "commit",
    "commit_update",
    "delete_uncommitted_files",
    "descriptor_schema",
    "detect_git_revision",
    "find_uncommitted_parts",
    "open_store",
    "redact_uri",
    "write_store",
]
