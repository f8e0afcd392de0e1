"""A bounded load on the localiser service: `clients` threads POST photos to /locate, one request after
another each, for `seconds`; the report gives latency percentiles (p50, p99), throughput and errors, and
each request's record. `during(elapsed_s)` runs every 0.1 s beside the load (fault injection: it returns
True when it acted, and the time is recorded in `events`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np


def run_load(url: str, photos: Sequence[bytes], clients: int = 4, seconds: float = 10.0,
             during: Callable[[float], bool] | None = None, timeout_s: float = 60.0) -> dict:
    import requests

    log: list[dict] = []
    lock = threading.Lock()
    started = time.perf_counter()
    stop_at = started + seconds

    def client(number: int) -> None:
        session = requests.Session()
        i = number
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            try:
                response = session.post(f"{url}/locate", data=photos[i % len(photos)],
                                        headers={"Content-Type": "image/jpeg"}, timeout=timeout_s)
                ok, status = response.status_code == 200, response.status_code
            except requests.RequestException as exc:
                ok, status = False, type(exc).__name__
            with lock:
                log.append({"client": number, "sent_s": sent - started, "latency_s": time.perf_counter() - sent,
                            "ok": ok, "status": status})
            i += clients

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    events = []
    while any(t.is_alive() for t in threads):
        elapsed = time.perf_counter() - started
        if during is not None and elapsed < seconds and during(elapsed):
            events.append(elapsed)
        time.sleep(0.1)
    wall = time.perf_counter() - started
    latencies = np.array([r["latency_s"] for r in log if r["ok"]])
    return {
        "clients": clients, "seconds": seconds, "wall_s": wall, "requests": len(log),
        "errors": sum(not r["ok"] for r in log), "requests_per_s": sum(r["ok"] for r in log) / wall,
        "p50_s": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p99_s": float(np.percentile(latencies, 99)) if len(latencies) else None,
        "max_s": float(latencies.max()) if len(latencies) else None,
        "statuses": sorted({str(r["status"]) for r in log}), "events": events, "log": log,
    }
