"""What a localisation index costs at scale: build time, memory per vector, queries/s, and the recall of each
approximate kind against exact search on the same queries.

    .venv/bin/python benchmarks/index_scale.py --scale 1m4096      # 1M descriptors of 4,096 dims
    .venv/bin/python benchmarks/index_scale.py --scale 10m256      # 10M descriptors of 256 dims
    .venv/bin/python benchmarks/index_scale.py --scale 20k256      # a quick check of the script
    # each writes results/index_scale_<scale>.json (a step whose result is there is not redone)

The database is synthetic and written as a real descriptor store (parts of 65,536 rows, at least 8 parts) under --work: unit
vectors around 20,000 "places" (each vector its place's direction plus Gaussian noise, normalised), so that
neighbours are structured as in real descriptors; 1,000 held-out queries are drawn the same way. Exact
top-10 lists come from a streamed flat search of the store (the "flat" kind: what it answers, at the cost of
4 D bytes per vector). Each approximate kind is built with `sare_core.index.store_index.build_index` in a
process of its own (its peak RSS is that process's); R@1 is the share of queries whose approximate top-1 is
the exact top-1, R@10 the share of the exact top-10 found in the approximate top-10. HNSW at the full size
costs more than a 2-core machine can spend (graph construction grows with N log N and the dimension), so it
is measured on the first --hnsw-rows rows and its build time extrapolated linearly in N (a lower bound).
A sharded build (Ray tasks, --shards) of the IVF-PQ index is timed against the one-process build. Each built
index is also searched at other settings of its speed/recall knob (IVF-PQ nprobe, HNSW efSearch, the re-ranked
shortlist's length: "tradeoff"). "ivfpq_rerank" is the same IVF-PQ index re-ranking a shortlist of 100 by exact
distance to float16 copies of the vectors, memory-mapped from disk (2 D bytes per vector there, not in RAM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SCALES = {  # name: (rows, dims, IVF lists, PQ bytes per vector, training vectors)
    "20k256": (20_000, 256, 64, 32, 10_000),
    "1m4096": (1_000_000, 4096, 1024, 256, 50_000),
    "10m256": (10_000_000, 256, 4096, 32, 100_000),
}
PLACES = 20_000
NOISE = 0.6
QUERIES = 1_000
ROWS_PER_PART = 65_536
MIN_PARTS = 8
SEARCH_KNOB_VALUES = {"nprobe": [1, 4, 16, 64, 128, 256], "ef_search": [16, 32, 64, 256, 512],
                      "rerank": [10, 25, 50, 200, 400]}  # a sharded build splits the store by parts: small scales still get several


def vectors(rng: np.random.Generator, places: np.ndarray, n: int) -> np.ndarray:
    which = rng.integers(0, len(places), size=n)
    x = places[which] + NOISE * rng.standard_normal((n, places.shape[1]), dtype=np.float32) / np.sqrt(places.shape[1])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_database(store_uri: str, rows: int, dim: int, seed: int = 0) -> dict:
    """The synthetic store (skipped when a committed one of the same size is there) and the queries."""
    from sare_core.store import PartWriter, StoreMetadata, commit

    rng = np.random.default_rng(seed)
    places = rng.standard_normal((PLACES, dim), dtype=np.float32)
    places /= np.linalg.norm(places, axis=1, keepdims=True)
    queries = vectors(np.random.default_rng(seed + 1), places, QUERIES)
    if committed_store_fits(store_uri, rows, dim):
        return {"queries": queries, "write_seconds": None}
    shutil.rmtree(store_uri, ignore_errors=True)  # none, a partial or a differently-sized store: written afresh
    started = time.perf_counter()
    metadata = StoreMetadata(dim=dim, dataset=f"synthetic-{rows}x{dim}", model_hash=f"synthetic{dim}")
    writer = PartWriter(store_uri, metadata, task_id="bench")
    part_rows = min(ROWS_PER_PART, -(-rows // MIN_PARTS))  # enough parts for a sharded build to split
    for start in range(0, rows, part_rows):
        n = min(part_rows, rows - start)
        writer.write(ids=[f"v{i:09d}" for i in range(start, start + n)], roles="database",
                     descriptors=vectors(rng, places, n), utm=np.zeros((n, 2)))
    commit(store_uri, writer.parts, metadata)
    return {"queries": queries, "write_seconds": time.perf_counter() - started}


def committed_store_fits(store_uri: str, rows: int, dim: int) -> bool:
    """Whether `store_uri` already holds a committed store of `rows` x `dim` in enough parts to shard."""
    from sare_core.store import StoreNotCommittedError, open_store

    try:
        store = open_store(store_uri, verify=False)
    except StoreNotCommittedError:
        return False
    return store.num_rows(role="database") == rows and store.dim == dim and len(store.parts) >= min(MIN_PARTS, rows)


def exact_top10(store_uri: str, queries: np.ndarray) -> tuple[np.ndarray, float]:
    from sare_core.evaluation.search import knn_search_stream
    from sare_core.store import open_store

    store = open_store(store_uri)
    started = time.perf_counter()
    batches = (b.descriptors for b in store.iter_batches(role="database", columns=["descriptor"]))
    result = knn_search_stream(queries, batches, 10)
    return result.indices, time.perf_counter() - started


def build_and_search(store_uri: str, out: str, spec: dict, queries_path: str, rows: int | None) -> dict:
    """In this process: build the index (of the first `rows` rows when given), search the queries."""
    from sare_core.index.faiss_index import IndexSpec
    from sare_core.index.store_index import LocalizationIndex, build_index

    source = store_uri
    if rows is not None:  # a prefix of the database: the first parts
        source = prefix_store(store_uri, rows)
    started = time.perf_counter()
    record = build_index(source, out, IndexSpec(**spec))
    build = time.perf_counter() - started
    index = LocalizationIndex.load(out)
    queries = np.load(queries_path)
    index.search(queries[:10], 10)  # warm-up
    started = time.perf_counter()
    results = index.search(queries, 10)
    search = time.perf_counter() - started
    found = ids_of(results)
    tradeoff = []  # the same index searched at other settings of its speed/recall knob
    knob = "rerank" if spec.get("rerank") else {"ivfpq": "nprobe", "hnsw": "ef_search"}.get(spec["kind"])
    for value in SEARCH_KNOB_VALUES.get(knob, []):
        index.set_search_params(**{knob: value})
        started = time.perf_counter()
        swept = index.search(queries, 10)
        tradeoff.append({knob: value, "queries_per_s": len(queries) / (time.perf_counter() - started),
                         "found": ids_of(swept).tolist()})
    size = sum(os.path.getsize(os.path.join(out, s["file"])) for s in record["shards"])
    refine_bytes = os.path.getsize(os.path.join(out, record["refine_file"])) if record.get("refine_file") else 0
    return {"build_seconds": build, "search_seconds": search, "queries_per_s": len(queries) / search,
            "index_bytes": size, "bytes_per_vector": size / record["count"], "rows": record["count"],
            "refine_bytes_on_disk": refine_bytes,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "found": found.tolist(),
            "spec": record["spec"], "tradeoff": tradeoff}


def ids_of(results) -> np.ndarray:
    """(M, 10) database rows of each query's matches (-1 where fewer came back)."""
    return np.array([[int(m.id[1:]) for m in r] + [-1] * (10 - len(r)) for r in results])


def prefix_store(store_uri: str, rows: int) -> str:
    """A store of the first parts of `store_uri` holding `rows` rows (a committed copy of the manifest's
    first parts, sharing their files), for a smaller build."""
    import shutil

    from sare_core.store import commit, open_store

    store = open_store(store_uri)
    prefix = f"{store_uri}_first{rows}"
    if os.path.isdir(prefix):
        shutil.rmtree(prefix)
    os.makedirs(prefix)
    parts, total = [], 0
    for part in store.parts:
        if total >= rows:
            break
        os.link(os.path.join(store_uri, part.name), os.path.join(prefix, part.name))
        parts.append(part.name)
        total += part.num_rows
    commit(prefix, parts, store.metadata)
    return prefix


def recall(found: np.ndarray, exact: np.ndarray) -> dict:
    r1 = float(np.mean(found[:, 0] == exact[:, 0]))
    r10 = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))
    return {"recall@1": r1, "recall@10": r10}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=list(SCALES), required=True)
    parser.add_argument("--work", default="/tmp/sare_index_scale", help="where the synthetic store and indexes go")
    parser.add_argument("--kinds", default="ivfpq,ivfpq_rerank,hnsw")
    parser.add_argument("--hnsw-rows", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=2, help="sharded IVF-PQ build on Ray (0: skip)")
    parser.add_argument("--worker", nargs=4, metavar=("STORE", "OUT", "SPEC", "QUERIES"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-rows", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # a build in a process of its own
        store, out, spec, queries = args.worker
        print(json.dumps(build_and_search(store, out, json.loads(spec), queries, args.worker_rows)))
        return 0
    rows, dim, nlist, pq_m, train_size = SCALES[args.scale]
    work = os.path.join(args.work, args.scale)
    os.makedirs(work, exist_ok=True)
    result_path = os.path.join(REPO, "results", f"index_scale_{args.scale}.json")
    result = json.load(open(result_path)) if os.path.isfile(result_path) else {}
    result.update({"scale": args.scale, "rows": rows, "dim": dim, "queries": QUERIES, "host": platform.node(),
                   "cpus": os.cpu_count(), "command": "python benchmarks/index_scale.py " + " ".join(argv or sys.argv[1:])})

    def save():
        os.makedirs(os.path.dirname(result_path), exist_ok=True)
        with open(result_path, "w") as f:
            json.dump(result, f, indent=1)

    store_uri = os.path.join(work, "store")
    written = write_database(store_uri, rows, dim)
    queries_path = os.path.join(work, "queries.npy")
    np.save(queries_path, written["queries"])
    if written["write_seconds"] is not None:
        result["store_write_seconds"] = written["write_seconds"]
    if "flat" not in result or not os.path.isfile(os.path.join(work, "exact.npy")):
        exact, seconds = exact_top10(store_uri, written["queries"])
        np.save(os.path.join(work, "exact.npy"), exact)
        result["flat"] = {"search_seconds": seconds, "queries_per_s": QUERIES / seconds, "bytes_per_vector": 4 * dim,
                          "note": "exact search streamed from the store (what a flat index answers)"}
        save()
        print(json.dumps({"flat": result["flat"]}), flush=True)
    exact = np.load(os.path.join(work, "exact.npy"))
    specs = {"ivfpq": {"kind": "ivfpq", "nlist": nlist, "pq_m": pq_m, "train_size": train_size, "nprobe": 32},
             "hnsw": {"kind": "hnsw", "hnsw_m": 32, "ef_construction": 80, "ef_search": 128},
             "ivfpq_rerank": {"kind": "ivfpq", "nlist": nlist, "pq_m": pq_m, "train_size": train_size, "nprobe": 32,
                              "rerank": 100}}
    for kind in [k for k in args.kinds.split(",") if k]:
        if kind in result:
            continue
        subset = args.hnsw_rows if kind == "hnsw" and rows > args.hnsw_rows else None
        command = [sys.executable, __file__, "--scale", args.scale, "--worker", store_uri,
                   os.path.join(work, f"index_{kind}"), json.dumps(specs[kind]), queries_path]
        if subset:
            command += ["--worker-rows", str(subset)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        found = np.array(row.pop("found"))
        swept = [(point, np.array(point.pop("found"))) for point in row["tradeoff"]]
        if subset:  # against exact search over the same prefix
            from sare_core.evaluation.search import knn_search
            from sare_core.store import open_store

            prefix = open_store(f"{store_uri}_first{subset}").read(role="database", columns=["descriptor"]).descriptors
            sub_exact = knn_search(written["queries"], prefix, 10, mode="flat").indices
            reference = sub_exact
            row["build_seconds_extrapolated_to_all_rows"] = row["build_seconds"] * rows / row["rows"]
        else:
            reference = exact
        row.update(recall(found, reference))
        for point, point_found in swept:
            point.update(recall(point_found, reference))
        result[kind] = row
        save()
        print(json.dumps({kind: row}), flush=True)
    if args.shards > 1 and "ivfpq_sharded" not in result:
        from pipelines.index.build import IndexBuildConfig, run

        started = time.perf_counter()
        record = run(IndexBuildConfig(store=store_uri, out=os.path.join(work, "index_ivfpq_sharded"),
                                      spec=specs["ivfpq"], shards=args.shards))
        result["ivfpq_sharded"] = {"shards": args.shards, "build_seconds": time.perf_counter() - started,
                                   "rows_per_shard": [s["rows"] for s in record["shards"]]}
        save()
    print(f"wrote {os.path.relpath(result_path, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
