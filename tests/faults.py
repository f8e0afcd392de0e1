"""Helpers for the fault tests: find processes by their title, kill them when a condition holds."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable


def descendants(root: int) -> set[int]:
    """The PIDs of every process below `root` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def pids_with_title(fragment: str) -> list[int]:
    """PIDs of this test session's processes (descendants of the pytest process: the Ray instance it
    started, and the workers of that instance) whose command line contains `fragment` (Ray titles its
    workers `ray::<Actor>`). Never another Ray instance's processes on the same machine."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline:
            found.append(pid)
    return sorted(found)


class KillWhen:
    """A thread that, once `ready()` returns a PID (polling every 0.1 s for up to `timeout_s`), sends it
    SIGKILL; `.killed` holds the PIDs killed. Use as a context manager around the work under test."""

    def __init__(self, ready: Callable[[], int | None], timeout_s: float = 300.0, times: int = 1):
        self.ready, self.timeout_s, self.times = ready, timeout_s, times
        self.killed: list[int] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        deadline = time.time() + self.timeout_s
        while time.time() < deadline and len(self.killed) < self.times:
            pid = self.ready()
            if pid is not None and pid not in self.killed:
                with contextlib.suppress(ProcessLookupError):  # it exited between ready() and the kill
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
            time.sleep(0.1)

    def __enter__(self) -> KillWhen:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join(timeout=5)
