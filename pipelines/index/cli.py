"""`sare index build --store STORE --out INDEX [--kind flat|ivfpq|hnsw] [--shards N] [--set key=value ...]`."""

from __future__ import annotations

import argparse


def _build_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .build import IndexBuildConfig, run

    spec = {k: v for k, v in (("kind", args.kind), ("nlist", args.nlist), ("pq_m", args.pq_m),
                              ("rerank", args.rerank)) if v is not None}
    base = {"store": args.store, "out": args.out, "split": args.split, "shards": args.shards,
            "images_root": args.images_root, "spec": spec or None}
    record = run(load_config(IndexBuildConfig, args.config, args.set, base=base))
    print(f"index {args.out}: {record['kind']} over {record['count']} vectors of {record['dim']} dims, "
          f"{record['bytes_per_vector']:.0f} bytes per vector, {len(record['shards'])} shard(s), model "
          f"{record['model_hash']}, built in {record['build_seconds']:.1f} s")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("index", help="localisation indexes over descriptor stores (FAISS)")
    sub = parser.add_subparsers(dest="index_command", metavar="INDEX_COMMAND")
    p = sub.add_parser("build", help="index a store's database rows: exact flat, or IVF-PQ / HNSW for scale",
                       description="Build a FAISS index over the database rows of a descriptor store, streaming "
                       "(IVF-PQ: trained on a seeded sample, then filled batch by batch), optionally in shards "
                       "built in parallel on Ray. The index records the store's ids, coordinates or labels and "
                       "model hash.")
    p.add_argument("--store", help="descriptor store (local folder or s3://)")
    p.add_argument("--out", help="index folder to write")
    p.add_argument("--kind", choices=("flat", "ivfpq", "hnsw"), help="default flat (exact)")
    p.add_argument("--nlist", type=int, help="ivfpq: inverted lists (default about 4 sqrt(N))")
    p.add_argument("--pq-m", dest="pq_m", type=int, help="ivfpq: bytes per vector (default D / 16)")
    p.add_argument("--rerank", type=int, help="ivfpq: re-rank a shortlist of this many by exact distance to "
                   "float16 copies of the vectors kept beside the index (2 D bytes per vector on disk)")
    p.add_argument("--split", help="index only this split's database rows")
    p.add_argument("--shards", type=int, help="build in this many shards on Ray workers (default 1)")
    p.add_argument("--images-root", dest="images_root", help="folder the store's image ids are relative to")
    p.add_argument("--config", help="YAML IndexBuildConfig")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. spec.nprobe=64")
    p.set_defaults(func=_build_cmd)
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
