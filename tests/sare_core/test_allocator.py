"""sare_core.allocator: glibc's thresholds raised in the processes that run CPU passes, and what that does to
page faults (counted, not timed). Each case runs in a fresh interpreter: the settings act per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sare_core import allocator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLIBC = allocator._glibc_mallopt() is not None

# Allocates, fills and frees 48 MiB 40 times through the C library's malloc (a layer's activations, batch after
# batch: above the 32 MiB up to which glibc's own threshold adapts) and prints the minor page faults that
# cost, after `keep_freed_memory` when asked. (Through malloc itself: numpy asks for huge pages for large
# arrays, which hides the faults' count, not their cost.)
FAULTS = """
import ctypes, json, resource, sys
from sare_core.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    block = libc.malloc(48 << 20)
    ctypes.memset(block, 1, 48 << 20)
    libc.free(block)
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(code: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, **(env or {})},
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_kept_memory_is_reused_instead_of_faulted_in_again():
    default = _run(FAULTS, "default", env={allocator.ENV_SWITCH: "1"})
    kept = _run(FAULTS, "keep", env={allocator.ENV_SWITCH: "1"})
    assert kept["applied"] and not default["applied"]
    pages = (48 << 20) // 4096
    assert default["faults"] > 20 * pages  # most rounds fault every page in again
    assert kept["faults"] < 3 * pages  # the first round's pages, reused by the others


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_switch_off_leaves_the_allocator_as_it_comes():
    off = _run(FAULTS, "keep", env={allocator.ENV_SWITCH: "0"})
    assert not off["applied"]
    assert off["faults"] > 20 * ((48 << 20) // 4096)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_the_processes_that_run_cpu_passes_set_it(tmp_path):
    """The city's render workers and Ray Data's decode tasks call it (the training workers, the extraction
    actors and the `sare` command line call it likewise, at their start)."""
    code = """
import json, sys
import pyarrow as pa
from sare_core import allocator
from sare_core.data.synth.city import _render_chunk
from pipelines.extract.decode import decode_images
what = sys.argv[1]
if what == "render":
    _render_chunk(sys.argv[2], "tiny", 0, "test", "queries", 0, 2)
else:
    decode_images(pa.table({"path": [sys.argv[2] + "/missing.jpg"]}), image_size=(32, 32))
print(json.dumps({"applied": allocator._state.get("applied")}))
"""
    assert _run(code, "render", str(tmp_path))["applied"] is True
    assert _run(code, "decode", str(tmp_path))["applied"] is True
    assert _run(code, "decode", str(tmp_path), env={allocator.ENV_SWITCH: "0"})["applied"] is False


def test_calls_after_the_first_return_its_outcome(monkeypatch):
    monkeypatch.setattr(allocator, "_state", {"applied": False})
    monkeypatch.setenv(allocator.ENV_SWITCH, "1")
    assert allocator.keep_freed_memory() is False  # the first call's outcome stands
