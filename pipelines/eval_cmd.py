"""`sare eval`: score descriptor stores (table, JSON, Recall@N curve, HTML report)."""

from __future__ import annotations

import argparse

from .config_io import load_config
from .evaluate import EvalConfig, run


def _models_from_args(args: argparse.Namespace) -> list[dict]:
    models = []
    for text in args.store or []:
        name, sep, uris = text.partition("=")
        if not sep or not name or not uris:
            raise ValueError(f"--store {text!r} must be NAME=URI or NAME=DB_URI,QUERY_URI")
        db, _, q = uris.partition(",")
        models.append({"name": name, "database": db, "queries": q or None})
    if args.db:
        models.append({"name": args.name, "database": args.db, "queries": args.queries})
    return models


def _eval_cmd(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    data: dict = {}
    models = _models_from_args(args)
    if models:
        data["models"] = models
    for key in ("out_dir", "split", "search_mode", "images_root", "radius", "map_k"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.ns:
        data["ns"] = [int(n) for n in args.ns.split(",")]
    config = load_config(EvalConfig, args.config, overrides, base=data)
    run(config)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score descriptor stores: Recall@N table, JSON, PNG, HTML report")
    p.add_argument("--config", help="YAML EvalConfig (models, ns, radius, search_mode, ...)")
    p.add_argument("--db", help="database store URI (local path or s3://)")
    p.add_argument("--queries", help="query store URI (default: the --db store)")
    p.add_argument("--name", default="model", help="row name for --db/--queries")
    p.add_argument("--store", action="append", metavar="NAME=URI[,QUERY_URI]",
                   help="a model's store(s); repeat to compare (first = baseline of the ratio row)")
    p.add_argument("--out-dir", dest="out_dir")
    p.add_argument("--ns", help="comma-separated N values (default 1,2,3,4,5,10)")
    p.add_argument("--radius", type=float, help="positives within this many metres (default: store's, else 25)")
    p.add_argument("--map-k", dest="map_k", type=int)
    p.add_argument("--split")
    p.add_argument("--search-mode", dest="search_mode", help="auto|flat|cpu_shards|gpu_shards|stream|ray")
    p.add_argument("--images-root", dest="images_root", help="folder the image ids are relative to (HTML report)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_eval_cmd)
