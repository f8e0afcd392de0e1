"""A writer process that dies by SIGKILL at a chosen moment (run by the crash tests).

    python -m tests.sare_core.store.crash_writer URI MODE

Writes two parts of 50 rows (ids "w0-<i>", "w1-<i>", D=8) to URI, prints their names, then:
  before-commit: dies before committing anything;
  mid-part:      starts a third part and dies after writing its bytes, before renaming them into place;
  mid-update:    commits a store from the two parts, writes a third part, dies while committing the update
                 (after the new manifest's bytes are written, before they replace the old manifest).
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

from sare_core.store import PartWriter, StoreMetadata, commit, commit_update

DIM = 8
METADATA = {"dim": DIM, "dataset": "crash", "model_hash": "feedfacefeedface"}


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def rows(tag: str, n: int = 50) -> dict:
    rng = np.random.default_rng(len(tag))
    return {"ids": [f"{tag}-{i}" for i in range(n)], "roles": "database",
            "descriptors": rng.standard_normal((n, DIM))}


def main(uri: str, mode: str) -> None:
    metadata = StoreMetadata(**METADATA)
    writer = PartWriter(uri, metadata, task_id="doomed")
    for tag in ("w0", "w1"):
        writer.write(**rows(tag))
    print(" ".join(p.name for p in writer.parts), flush=True)
    if mode == "before-commit":
        die()
    elif mode == "mid-part":
        os.replace = die
        writer.write(**rows("w2"))
    elif mode == "mid-update":
        commit(uri, writer.parts, metadata)
        third = writer.write(**rows("w2"))
        os.replace = die
        commit_update(uri, [third])
    raise SystemExit(f"unknown mode {mode!r} or survived it")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
