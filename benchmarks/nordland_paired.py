"""Two losses' test results on Nordland, compared query by query: how sure is a lead, given the test queries?

The seed spread (docs/RESULTS.md) says how much training randomness moves a loss; this says how much the
choice of test queries could. For losses A and B (default: the SARE-joint ten-epoch variant and triplet's),
each final model's test store (written by `nordland_study.py final`, under runs/nordland_study/eval/) is
searched again exactly (FAISS, top 10), each query's hit at N = 1, 5, 10 is recorded, the recall is checked
against the final's JSON, and per query the hits are averaged over the seeds. The lead (A - B, in points)
is resampled over queries 10,000 times: queries drawn independently, and in blocks of --block consecutive
frames (neighbouring Nordland frames look alike, so independent draws understate the spread). Reported: the
lead, its 95% interval under both, and the share of resamples in which A does not lead. Also, per seed
pair, the queries only A gets right and those only B does.

    .venv/bin/python benchmarks/nordland_paired.py    # results/nordland_study/paired.json

Needs the final runs' stores (runs/nordland_study/eval/final_<label>_seed<S>/stores/), i.e. a machine where
`nordland_study.py final` ran.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.data.ground_truth import positives_within  # noqa: E402
from sare_core.evaluation.metrics import first_hit_rank  # noqa: E402
from sare_core.evaluation.search import knn_search  # noqa: E402
from sare_core.store import open_store  # noqa: E402

RESULTS = os.path.join(REPO, "results", "nordland_study")
EVAL = os.path.join(REPO, "runs", "nordland_study", "eval")
NS = (1, 5, 10)
RADIUS_FRAMES = 2.0  # evaluation positives: within +-2 frames (docs/RESULTS.md, Protocol)


def hits(label: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries' frame positions sorted, (M, len(NS)) bool hits at each N) of one final model's test store."""
    stores = glob.glob(os.path.join(EVAL, f"final_{label}_seed{seed}", "stores", "*"))
    if len(stores) != 1:
        raise FileNotFoundError(f"final_{label}_seed{seed}: expected one store under {EVAL}, found {stores}")
    store = open_store(stores[0])
    db, q = store.read(role="database"), store.read(role="query")
    order = np.argsort(q.utm[:, 0], kind="stable")  # queries in frame order, the same for every model
    q_desc, q_utm = q.descriptors[order], q.utm[order]
    ranked = knn_search(q_desc, db.descriptors, max(NS), mode="flat").indices
    ranks = first_hit_rank(ranked, positives_within(q_utm, db.utm, RADIUS_FRAMES))
    table = np.stack([(ranks >= 0) & (ranks < n) for n in NS], axis=1)
    with open(os.path.join(RESULTS, f"final_{label}_seed{seed}.json")) as f:
        reported = json.load(f)["test_recall"]
    for j, n in enumerate(NS):  # the same search as `sare eval`, or this comparison is of something else
        if abs(100 * table[:, j].mean() - reported[str(n)]) > 1e-9:
            raise RuntimeError(f"final_{label}_seed{seed}: R@{n} {100 * table[:, j].mean():.4f} here, "
                               f"{reported[str(n)]:.4f} in its JSON")
    return q_utm[:, 0], table


def resampled_leads(diff: np.ndarray, rounds: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """(rounds, len(NS)) mean of `diff` (M, len(NS)) over resampled queries: independent draws (block 1)
    or a moving-block bootstrap (blocks of `block` consecutive queries, wrapped at the end)."""
    m = len(diff)
    starts = rng.integers(0, m, size=(rounds, -(-m // block)))
    rows = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(rounds, -1)[:, :m] % m
    return diff[rows].mean(axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", default="sare_joint_gaussian_clip7_lr4e-3_ep10")
    parser.add_argument("--b", default="triplet_ep10")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--block", type=int, default=20, help="frames per block of the block bootstrap")
    parser.add_argument("--out", default=os.path.join(RESULTS, "paired.json"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    frames, per_run = None, {}
    for label in (args.a, args.b):
        for seed in seeds:
            positions, table = hits(label, seed)
            if frames is not None and not np.array_equal(frames, positions):
                raise RuntimeError(f"final_{label}_seed{seed} has other test queries than the first store")
            frames, per_run[(label, seed)] = positions, table
    mean_a = np.mean([per_run[(args.a, s)] for s in seeds], axis=0)
    mean_b = np.mean([per_run[(args.b, s)] for s in seeds], axis=0)
    diff = 100.0 * (mean_a - mean_b)  # per query, points
    rng = np.random.default_rng(0)
    record = {
        "command": "python benchmarks/nordland_paired.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "a": args.a, "b": args.b, "seeds": seeds, "queries": int(len(diff)), "radius_frames": RADIUS_FRAMES,
        "rounds": args.rounds, "block_frames": args.block, "by_n": {},
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    resamples = {"independent": resampled_leads(diff, args.rounds, 1, rng),
                 f"blocks of {args.block}": resampled_leads(diff, args.rounds, args.block, rng)}
    for j, n in enumerate(NS):
        entry = {"recall_a": float(100 * mean_a[:, j].mean()), "recall_b": float(100 * mean_b[:, j].mean()),
                 "lead": float(diff[:, j].mean()), "resampled": {}, "per_seed": []}
        for kind, leads in resamples.items():
            low, high = np.percentile(leads[:, j], [2.5, 97.5])
            entry["resampled"][kind] = {"interval_95": [float(low), float(high)],
                                        "share_without_lead": float(np.mean(leads[:, j] <= 0))}
        for seed in seeds:
            a, b = per_run[(args.a, seed)][:, j], per_run[(args.b, seed)][:, j]
            entry["per_seed"].append({"seed": seed, "only_a": int(np.sum(a & ~b)), "only_b": int(np.sum(~a & b))})
        record["by_n"][str(n)] = entry
        blocks = entry["resampled"][f"blocks of {args.block}"]
        print(f"R@{n}: {args.a} {entry['recall_a']:.1f}, {args.b} {entry['recall_b']:.1f}, lead {entry['lead']:+.1f} "
              f"(95%: independent {entry['resampled']['independent']['interval_95'][0]:+.1f} .. "
              f"{entry['resampled']['independent']['interval_95'][1]:+.1f}, blocks {blocks['interval_95'][0]:+.1f} .. "
              f"{blocks['interval_95'][1]:+.1f}; no lead in {100 * blocks['share_without_lead']:.2f}% of block "
              f"resamples); only A / only B per seed: "
              + ", ".join(f"{p['only_a']}/{p['only_b']}" for p in entry["per_seed"]))
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {os.path.relpath(args.out, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
