"""Exact search at Pitts250k scale, and on the real Tokyo 24/7 geometry, on this machine.

    .venv/bin/python benchmarks/eval_scale.py [--db 254064 --queries 8280 --dim 4096] [--out results/eval_scale.json]

1. Writes a descriptor store of the given size (float32, L2-normalised random descriptors) in parts,
   never holding the whole database in memory (default under /tmp; reused when present).
2. In a fresh subprocess per measurement (so peak RSS belongs to that measurement alone):
   - the machine's matrix-multiply rate on the same shapes (queries x database blocks, numpy sgemm);
   - exact search with the database loaded from the store into one array ("flat");
   - exact search with the database streamed from the store batch by batch ("stream").
   Each reports wall time, peak RSS, achieved GFLOP/s (2 M N D flops) and its fraction of the sgemm rate.
3. The Tokyo 24/7 geometry (real UTM from ../shared/data/real_gt/tokyo247.npz, 315 queries against 75,984
   database images) with synthetic descriptors that encode position: Recall@N through the same search.
Results go to results/eval_scale.json; docs/BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_random_store(uri: str, num_db: int, num_q: int, dim: int, seed: int = 0, chunk: int = 16384) -> None:
    from sare_core.store import PartWriter, StoreMetadata, commit

    meta = StoreMetadata(dim=dim, dataset=f"random-{num_db}x{dim}", model_hash="random", provenance={"seed": seed})
    writer = PartWriter(uri, meta, task_id="bench")
    rng = np.random.default_rng(seed)
    for role, total in (("database", num_db), ("query", num_q)):
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            x = rng.standard_normal((n, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            utm = np.column_stack([rng.uniform(0, 5000, n), rng.uniform(0, 5000, n)])
            writer.write(ids=[f"{role[0]}{start + i:07d}" for i in range(n)], roles=role, descriptors=x, utm=utm,
                         splits="test")
    commit(uri, writer.parts, meta)


def measure_gemm(store_uri: str, block: int = 32768, repeats: int = 2) -> dict:
    """sgemm rate of (M, D) queries times (D, block) database blocks: the search's own matrix shapes."""
    from sare_core.store import open_store

    store = open_store(store_uri)
    q = np.ascontiguousarray(store.read(role="query", columns=["descriptor"]).descriptors)
    db = np.ascontiguousarray(next(store.iter_batches(role="database", columns=["descriptor"], batch_size=block)).descriptors)
    q @ db[:1024].T  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        q @ db.T
        best = min(best, time.perf_counter() - t)
    flops = 2.0 * len(q) * len(db) * q.shape[1]
    return {"gflops": flops / best / 1e9, "shape": [len(q), q.shape[1], len(db)], "seconds": best}


def measure_search(store_uri: str, mode: str) -> dict:
    """flat: load the database from the store into one array, then search it (timed apart);
    stream: read and search batch by batch (one time: reading is part of it)."""
    from sare_core.evaluation.search import knn_search
    from sare_core.evaluation.store_search import read_descriptors, search_store
    from sare_core.store import open_store

    store = open_store(store_uri)
    q = read_descriptors(store, "query")
    n_db = store.num_rows(role="database")
    rss_before = peak_rss_bytes()
    load_seconds = 0.0
    t = time.perf_counter()
    if mode == "flat":
        database = read_descriptors(store, "database")
        load_seconds = time.perf_counter() - t
        t = time.perf_counter()
        result = knn_search(q, database, k=20, mode="flat")
    else:
        result = search_store(q, store, k=20, mode=mode, batch_size=32768)
    seconds = time.perf_counter() - t
    flops = 2.0 * len(q) * n_db * store.dim
    return {
        "mode": result.mode, "seconds": seconds, "load_seconds": load_seconds, "gflops": flops / seconds / 1e9,
        "peak_rss_bytes": peak_rss_bytes(), "peak_rss_before_search_bytes": rss_before,
        "database_bytes": n_db * store.dim * 4, "queries": len(q), "database": n_db, "dim": store.dim,
        "top1_checksum": int(result.indices[:, 0].sum()),
    }


def tokyo_geometry(shared: Path, dim: int = 4096, seed: int = 0) -> dict:
    from sare_core.data import positives_within
    from sare_core.evaluation import evaluate

    data = np.load(shared / "real_gt" / "tokyo247.npz")
    q_utm, db_utm, radius = data["utmQ"], data["utmDb"], float(data["posDistThr"])
    rng = np.random.default_rng(seed)

    def encode(utm: np.ndarray, noise: float) -> np.ndarray:
        # Random Fourier features of position (a Gaussian kernel of 20 m length scale: nearby places have
        # similar descriptors) plus isotropic noise, L2-normalised; one fixed feature map for db and queries.
        fmap = np.random.default_rng(99)
        w = fmap.standard_normal((2, dim)) / 20.0
        b = fmap.uniform(0, 2 * np.pi, dim)
        x = np.sqrt(2.0 / dim) * np.cos((utm - db_utm.mean(0)) @ w + b)
        x = x + noise * rng.standard_normal((len(utm), dim)) / np.sqrt(dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    db = encode(db_utm, 6.0)
    q = encode(q_utm, 6.0)
    positives = positives_within(q_utm, db_utm, radius)
    t = time.perf_counter()
    ev, _ = evaluate(q, db, positives, ns=(1, 5, 10, 20), q_utm=q_utm, db_utm=db_utm, mode="flat")
    return {"seconds": time.perf_counter() - t, "queries": len(q), "database": len(db), "dim": dim,
            "radius_m": radius, "queries_without_positives": ev.queries_without_positives,
            "recalls": {str(k): v for k, v in ev.recalls.items()}, "localization": ev.localization}


def run_child(kind: str, store: str, mode: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--store", store] + (["--mode", mode] if mode else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=int, default=254_064)
    parser.add_argument("--queries", type=int, default=8_280)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--store", default=None, help="store location (default /tmp/sare-bench/random-DBxDIM)")
    parser.add_argument("--out", default=str(REPO / "results" / "eval_scale.json"))
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--child", choices=["gemm", "search"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="flat", help=argparse.SUPPRESS)
    args = parser.parse_args()
    store = args.store or f"/tmp/sare-bench/random-{args.db}x{args.dim}-q{args.queries}"

    if args.child == "gemm":
        print(json.dumps(measure_gemm(store)))
        return
    if args.child == "search":
        print(json.dumps(measure_search(store, args.mode)))
        return

    from sare_core.store import StoreNotCommittedError, open_store

    try:
        open_store(store)
        print(f"reusing store {store}")
    except (StoreNotCommittedError, FileNotFoundError):
        t = time.perf_counter()
        write_random_store(store, args.db, args.queries, args.dim)
        print(f"wrote store {store} in {time.perf_counter() - t:.1f} s")
    gemm = run_child("gemm", store)
    print(f"sgemm rate: {gemm['gflops']:.1f} GFLOP/s on {gemm['shape']}")
    results = {"gemm": gemm, "search": {}}
    for mode in ("flat", "stream"):
        r = run_child("search", store, mode)
        r["fraction_of_gemm"] = r["gflops"] / gemm["gflops"]
        r["peak_rss_over_database_bytes"] = r["peak_rss_bytes"] / r["database_bytes"]
        results["search"][mode] = r
        print(f"{mode:>6}: load {r['load_seconds']:.1f} s, search {r['seconds']:.1f} s, {r['gflops']:.1f} GFLOP/s ({100 * r['fraction_of_gemm']:.0f}% of sgemm), "
              f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB = {r['peak_rss_over_database_bytes']:.2f}x database")
    checks = {r["top1_checksum"] for r in results["search"].values()}
    results["modes_agree_on_top1"] = len(checks) == 1
    shared = Path(args.shared)
    if (shared / "real_gt" / "tokyo247.npz").is_file():
        results["tokyo247_geometry"] = tokyo_geometry(shared)
        t = results["tokyo247_geometry"]
        print(f"tokyo 24/7 geometry: {t['queries']} x {t['database']} in {t['seconds']:.2f} s, recalls {t['recalls']}")
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                          "command": " ".join([Path(sys.executable).name] + sys.argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
