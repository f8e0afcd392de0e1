"""What a descriptor store records about how it was made: model, dimension, dtype, dataset, provenance."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

DESCRIPTOR_DTYPES = ("float32", "float16")
GIT_REVISION_ENV = "SARE_GIT_REVISION"


def utc_now_iso() -> str:
    """The current time, UTC, ISO 8601 with seconds (e.g. 2026-01-31T12:00:00+00:00)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


@functools.lru_cache(maxsize=1)
def detect_git_revision() -> str | None:
    """The git commit of the source tree this code runs from ("<sha>-dirty" with uncommitted changes).

    $SARE_GIT_REVISION wins (container images carry no .git). None when the code is not in a git checkout
    of this project or git is missing.
    """
    if os.environ.get(GIT_REVISION_ENV):
        return os.environ[GIT_REVISION_ENV]
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        if not (top / "sare_core").is_dir():
            return None  # an installed copy inside some other repository
        revision = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{revision}-dirty" if dirty else revision


def json_normalised(value: dict, what: str) -> dict:
    """`value` as it reads back from JSON (tuples become lists); ValueError when it is not JSON data."""
    if not isinstance(value, dict):
        raise ValueError(f"store metadata: {what} must be a dict, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"store metadata: {what} must hold only JSON values: {error}") from None


@dataclass
class StoreMetadata:
    """Provenance and layout of a store, written into its manifest and into every part's Parquet footer.

    dim: descriptor length D. dtype: "float32" (exact) or "float16" (half the bytes; relative error
    about 5e-4 for L2-normalised descriptors). model_hash: `sare_core.models.model_hash` of the model that
    made the descriptors (None for descriptors from elsewhere). model_config: the model's config dict.
    dataset: the dataset's name. provenance: any further JSON dict from the caller (run config, seeds...).
    created_at (UTC ISO time) and git_revision are filled in when not given.
    """

    dim: int
    dtype: str = "float32"
    dataset: str = ""
    model_hash: str | None = None
    model_config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now_iso)
    git_revision: str | None = field(default_factory=detect_git_revision)

    def __post_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"store metadata: dim must be a positive int, got {self.dim!r}")
        if self.dtype not in DESCRIPTOR_DTYPES:
            raise ValueError(f"store metadata: dtype must be one of {DESCRIPTOR_DTYPES}, got {self.dtype!r}")
        self.model_config = json_normalised(self.model_config, "model_config")
        self.provenance = json_normalised(self.provenance, "provenance")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StoreMetadata:
        """Inverse of `to_dict`; unknown keys (from newer writers) are ignored."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known.setdefault("git_revision", None)  # not detected again: this code did not make the store
        known.setdefault("created_at", "")
        return cls(**known)

    def mismatches(self, other: StoreMetadata) -> list[str]:
        """Descriptions of the fields that make descriptors of `other` incomparable with these (empty: OK).

        Only dim, dtype, model_hash and dataset count; times, provenance and git revision may differ
        between the tasks and runs that fill one store.
        """
        return [f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}"
                for name in ("dim", "dtype", "model_hash", "dataset")
                if getattr(self, name) != getattr(other, name)]
