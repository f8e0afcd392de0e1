"""The manifest `_store.json`: the one file that makes a store exist, written last and atomically.

It lists the committed parts (descriptor parts and failure parts) with their row counts and sizes, the
store's metadata and schema, and the history of commits. A reader trusts only parts listed here; any
other file under the store's root (a part from a task that died or whose run was never committed, a
temporary file) is invisible to it. An incremental commit rewrites the manifest with version + 1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .errors import StoreCorruptError, StoreNotCommittedError
from .location import StoreLocation
from .metadata import StoreMetadata
from .schema import FAILURES_SCHEMA, descriptor_schema

MANIFEST_NAME = "_store.json"
FORMAT = "sare-descriptor-store"
FORMAT_VERSION = 1
PART_KINDS = ("descriptors", "failures")
PART_PREFIX = {"descriptors": "part-", "failures": "failures-"}
PART_SUFFIX = ".parquet"


def part_kind_of(name: str) -> str | None:
    """"descriptors" or "failures" for a part file name, None for any other file."""
    for kind, prefix in PART_PREFIX.items():
        if name.startswith(prefix) and name.endswith(PART_SUFFIX):
            return kind
    return None


@dataclass
class PartInfo:
    """One immutable Parquet file of a store, as a writer task reports it and the manifest lists it.

    name: file name under the store's root. kind: "descriptors" | "failures". num_rows, size_bytes: as
    written. rows_by_role_split: {role: {split: rows}} for descriptor parts ({} for failure parts).
    task_id: the writer task's label (informative).
    """

    name: str
    kind: str
    num_rows: int
    size_bytes: int
    rows_by_role_split: dict[str, dict[str, int]] = field(default_factory=dict)
    task_id: str = ""

    def rows(self, role: str | None = None, split: str | None = None) -> int:
        """Rows of this part with the given role and split (None: any)."""
        if self.kind != "descriptors":
            return self.num_rows if role is None and split is None else 0
        return sum(count for r, by_split in self.rows_by_role_split.items() if role is None or r == role
                   for s, count in by_split.items() if split is None or s == split)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PartInfo:
        part = cls(name=str(data["name"]), kind=str(data["kind"]), num_rows=int(data["num_rows"]),
                   size_bytes=int(data["size_bytes"]),
                   rows_by_role_split={str(r): {str(s): int(c) for s, c in by_split.items()}
                                       for r, by_split in data.get("rows_by_role_split", {}).items()},
                   task_id=str(data.get("task_id", "")))
        if part.kind not in PART_KINDS or part_kind_of(part.name) != part.kind or "/" in part.name:
            raise ValueError(f"bad part entry {part.name!r} of kind {part.kind!r}")
        return part


@dataclass
class CommitRecord:
    """One commit in a store's history: which version it made and what it added."""

    version: int
    committed_at: str
    parts_added: int
    rows_added: int
    failures_added: int
    git_revision: str | None = None
    provenance: dict = field(default_factory=dict)


@dataclass
class Manifest:
    """The committed state of a store: version (1 for the first commit), metadata, parts, history."""

    version: int
    metadata: StoreMetadata
    parts: list[PartInfo]
    failures: list[PartInfo]
    history: list[CommitRecord]

    def num_rows(self, role: str | None = None, split: str | None = None) -> int:
        """Descriptor rows with the given role and split (None: any), from the part entries."""
        return sum(part.rows(role, split) for part in self.parts)

    @property
    def num_failures(self) -> int:
        return sum(part.num_rows for part in self.failures)

    def to_json(self) -> bytes:
        schema = descriptor_schema(self.metadata.dim, self.metadata.dtype)
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "metadata": self.metadata.to_dict(),
            "num_rows": self.num_rows(),
            "num_failures": self.num_failures,
            "schema": {
                "descriptors": {f.name: str(f.type) for f in schema},
                "failures": {f.name: str(f.type) for f in FAILURES_SCHEMA},
            },
            "parts": [part.to_dict() for part in self.parts],
            "failures": [part.to_dict() for part in self.failures],
            "history": [asdict(record) for record in self.history],
        }
        return json.dumps(document, indent=1, allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Manifest:
        """Parse manifest bytes; StoreCorruptError naming `source` when they are not a valid manifest."""
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreCorruptError(f"{source}: manifest is not valid JSON ({error})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise StoreCorruptError(f"{source}: not a descriptor store manifest (format is not {FORMAT!r})")
        if document.get("format_version", 0) > FORMAT_VERSION:
            raise StoreCorruptError(f"{source}: written with format version {document['format_version']}, "
                                    f"this code reads up to {FORMAT_VERSION}")
        try:
            manifest = cls(
                version=int(document["version"]),
                metadata=StoreMetadata.from_dict(document["metadata"]),
                parts=[PartInfo.from_dict(p) for p in document["parts"]],
                failures=[PartInfo.from_dict(p) for p in document["failures"]],
                history=[CommitRecord(**record) for record in document.get("history", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise StoreCorruptError(f"{source}: malformed manifest ({type(error).__name__}: {error})") from None
        if any(p.kind != "descriptors" for p in manifest.parts) or any(
                p.kind != "failures" for p in manifest.failures):
            raise StoreCorruptError(f"{source}: malformed manifest (part listed under the wrong kind)")
        return manifest


def read_manifest(location: StoreLocation) -> Manifest:
    """The committed manifest at `location`; StoreNotCommittedError when there is none."""
    source = location.display(MANIFEST_NAME)
    try:
        data = location.read_bytes(MANIFEST_NAME)
    except FileNotFoundError:
        raise StoreNotCommittedError(
            f"descriptor store {location.uri} is not committed: no manifest {source} (nothing was written "
            f"there, or the writer stopped before its commit)") from None
    return Manifest.from_json(data, source)


def write_manifest(location: StoreLocation, manifest: Manifest) -> None:
    """Write `manifest` atomically: readers see the previous manifest or this one, never a mix."""
    location.write_bytes_atomic(MANIFEST_NAME, manifest.to_json())
