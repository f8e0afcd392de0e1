"""sare_core.allocator: glibc's thresholds raised in the processes that run CPU passes, and what that does to
large blocks (whether each is mapped afresh, and the page faults: counted, not timed). Cases that set the
allocator run in a fresh interpreter, as the settings act per process."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

from sare_core import allocator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLIBC = allocator._glibc_mallopt() is not None

# Allocates, fills and frees 48 MiB 40 times through the C library's malloc (a layer's activations, batch after
# batch: above the 32 MiB up to which glibc's own threshold adapts), after `keep_freed_memory` when asked, and
# prints the minor page faults that cost and, for each cycle, whether the block was mapped afresh
# (how many more mapped blocks mallinfo2 counts while it is held: 1 for a block of its own from mmap, 0 for
# one from the heap). Through
# malloc itself: numpy asks for huge pages for large arrays, which hides the faults' count, not their cost.
FAULTS = """
import ctypes, json, resource, sys
from sare_core.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
mapped = []
for _ in range(40):
    held_before = libc.mallinfo2().hblks
    block = libc.malloc(48 << 20)
    ctypes.memset(block, 1, 48 << 20)
    mapped.append(libc.mallinfo2().hblks - held_before)
    libc.free(block)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults, "mapped": mapped}))
"""
PAGES = (48 << 20) // 4096


def _run(code: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, **(env or {})},
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_kept_memory_is_reused_instead_of_mapped_again():
    default = _run(FAULTS, "default", env={allocator.ENV_SWITCH: "1"})
    kept = _run(FAULTS, "keep", env={allocator.ENV_SWITCH: "1"})
    assert kept["applied"] and not default["applied"]
    assert default["mapped"] == [1] * 40  # every cycle maps a fresh block, whose pages the kernel zeroes
    assert kept["mapped"] == [0] * 40  # every cycle takes the block from the heap
    assert kept["faults"] < 3 * PAGES  # the first cycle's pages, reused by the others


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_switch_off_leaves_the_allocator_as_it_comes():
    off = _run(FAULTS, "keep", env={allocator.ENV_SWITCH: "0"})
    assert not off["applied"]
    assert off["mapped"] == [1] * 40


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_decode_tasks_set_it(tmp_path):
    code = """
import json, sys
import pyarrow as pa
from sare_core import allocator
from pipelines.extract.decode import decode_images
decode_images(pa.table({"path": [sys.argv[1] + "/missing.jpg"]}), image_size=(32, 32))
print(json.dumps({"applied": allocator._state.get("applied")}))
"""
    assert _run(code, str(tmp_path))["applied"] is True
    assert _run(code, str(tmp_path), env={allocator.ENV_SWITCH: "0"})["applied"] is False


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_the_command_line_and_the_extraction_actor_set_it(tmp_path):
    """`sare` sets it before running a command (here one that fails on a missing file), and the extraction
    actor's constructor sets it in the actor's process."""
    code = """
import json, sys
from sare_core import allocator
if sys.argv[1] == "cli":
    from pipelines.cli import main
    status = main(["data", "inspect", sys.argv[2] + "/missing.parquet"])
    assert status != 0, status
else:
    from sare_core.models.embedding import build_model
    from pipelines.extract.embedder import ImageEmbedder
    ImageEmbedder(build_model({"backbone": "tiny", "num_clusters": 4, "whitening_dim": None}))
print(json.dumps({"applied": allocator._state.get("applied")}))
"""
    assert _run(code, "cli", str(tmp_path))["applied"] is True
    assert _run(code, "actor", str(tmp_path))["applied"] is True


def test_the_city_sets_it_in_its_render_pool_only(tmp_path, monkeypatch):
    """The render processes start with it; a one-worker render (in the caller's process) leaves it alone."""
    from sare_core.data.synth import city
    from sare_core.data.synth.presets import get_preset

    seen = {}

    class InlinePool:  # records the pool's settings and runs the chunks here
        def __init__(self, max_workers, mp_context, initializer=None):
            seen["initializer"] = initializer

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, *args):
            future = concurrent.futures.Future()
            future.set_result(fn(*args))
            return future

    monkeypatch.setattr(city, "ProcessPoolExecutor", InlinePool)
    monkeypatch.setattr(allocator, "_state", {})
    city._run_chunks(str(tmp_path / "two"), get_preset("tiny"), 0, 2, city.RENDER_BATCH_PIXELS)
    assert seen["initializer"] is allocator.keep_freed_memory
    assert allocator._state == {}  # the chunks themselves did not set it
    city._run_chunks(str(tmp_path / "one"), get_preset("tiny"), 0, 1, city.RENDER_BATCH_PIXELS)
    assert allocator._state == {}


class FakeMallopt:
    """glibc's mallopt as an older glibc answers it: mmap thresholds above `cap` refused."""

    def __init__(self, cap: int | None):
        self.cap, self.calls = cap, []

    def __call__(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        if parameter == allocator._M_MMAP_THRESHOLD:
            return int(self.cap is not None and value <= self.cap)
        return 1


def test_a_capped_glibc_gets_its_highest_mmap_threshold(monkeypatch):
    fake = FakeMallopt(cap=allocator.GLIBC_MMAP_CAP)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: fake)
    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setenv(allocator.ENV_SWITCH, "1")
    assert allocator.keep_freed_memory() is True
    assert fake.calls == [(allocator._M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
                          (allocator._M_MMAP_THRESHOLD, allocator.GLIBC_MMAP_CAP),
                          (allocator._M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]


def test_a_refused_mmap_threshold_leaves_the_trim_threshold_alone(monkeypatch):
    fake = FakeMallopt(cap=None)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: fake)
    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setenv(allocator.ENV_SWITCH, "1")
    assert allocator.keep_freed_memory() is False
    assert all(parameter == allocator._M_MMAP_THRESHOLD for parameter, _ in fake.calls)


def test_calls_after_the_first_return_its_outcome(monkeypatch):
    monkeypatch.setattr(allocator, "_state", {"applied": False})
    monkeypatch.setenv(allocator.ENV_SWITCH, "1")
    assert allocator.keep_freed_memory() is False  # the first call's outcome stands
