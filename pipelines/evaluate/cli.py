"""`sare eval`: score descriptor stores (table, JSON, Recall@N curve, HTML report); with `--manifest`, extract
the manifest's images with each `--model` first (see `pipelines.evaluate.manifest`)."""

from __future__ import annotations

import argparse


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


def _manifest_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .manifest import ManifestEvalConfig
    from .manifest import run as run_manifest

    store_flags = [flag for flag, given in (("--store", args.store), ("--db", args.db), ("--queries", args.queries),
                                            ("--name", args.name != "model"), ("--images-root", args.images_root))
                   if given]
    if store_flags:
        raise ValueError(f"{', '.join(store_flags)}: for scoring existing stores; --manifest extracts descriptors "
                         "itself (give --model) and resolves images under the manifest's folder")
    data: dict = {"manifest": args.manifest}
    if args.model:
        data["models"] = list(args.model)
    for key in ("out_dir", "split", "radius", "fit_split", "model_config"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.ns:
        data["ns"] = [int(n) for n in args.ns.split(",")]
    evaluation = {k: getattr(args, k) for k in ("search_mode", "map_k", "truncate") if getattr(args, k) is not None}
    if evaluation:
        data["evaluation"] = evaluation
    config = load_config(ManifestEvalConfig, args.config, list(args.set), base=data)
    run_manifest(config)
    return 0


def _eval_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .stores import EvalConfig, run

    if args.manifest:
        return _manifest_cmd(args)
    if args.model:
        raise ValueError("--model needs --manifest (the images to extract); score existing stores with --store")
    overrides = list(args.set)
    data: dict = {}
    models = _models_from_args(args)
    if models:
        data["models"] = models
    for key in ("out_dir", "split", "search_mode", "images_root", "radius", "map_k", "truncate"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.ns:
        data["ns"] = [int(n) for n in args.ns.split(",")]
    config = load_config(EvalConfig, args.config, overrides, base=data)
    run(config)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="score descriptor stores, or extract and score a manifest: Recall@N table, JSON, PNG, HTML",
        description="Score descriptor stores (--store / --db), or, with --manifest and --model, extract the "
        "manifest's images with each model (Ray Data) and score them in one go. --model takes a saved model "
        "(runs/X/model.pt), a model-config YAML, or pretrained:BACKBONE-POOLING (e.g. "
        "pretrained:efficientnet_lite0-netvlad: ImageNet weights; NetVLAD centroids by k-means on the database "
        "images of --fit-split, default the evaluated split).")
    p.add_argument("--config", help="YAML EvalConfig (models, ns, radius, search_mode, ...); with --manifest a "
                   "ManifestEvalConfig")
    p.add_argument("--manifest", help="manifest (.csv/.parquet) to extract and evaluate (needs --model)")
    p.add_argument("--model", action="append", metavar="[NAME=]CKPT|YAML|pretrained:NAME",
                   help="with --manifest: a model to evaluate; repeat to compare (first = baseline of the ratio row)")
    p.add_argument("--model-config", dest="model_config", help="with --manifest: YAML (ModelConfig or a run "
                   "config's model: section) that pretrained:NAME models start from (cut, image size, clusters, "
                   "whitening)")
    p.add_argument("--fit-split", dest="fit_split", help="with --manifest: split whose database images fit "
                   "off-the-shelf models' k-means centroids and whitening (default: the evaluated split)")
    p.add_argument("--db", help="database store URI (local path or s3://)")
    p.add_argument("--queries", help="query store URI (default: the --db store)")
    p.add_argument("--name", default="model", help="row name for --db/--queries")
    p.add_argument("--store", action="append", metavar="NAME=URI[,QUERY_URI]",
                   help="a model's store(s); repeat to compare (first = baseline of the ratio row)")
    p.add_argument("--out-dir", dest="out_dir")
    p.add_argument("--ns", help="comma-separated N values (default 1,2,3,4,5,10)")
    p.add_argument("--radius", type=float, help="positives within this distance: metres, or frames when utm_east "
                   "is a frame index (default: the store's / manifest split's pos_dist_thr, else 25)")
    p.add_argument("--map-k", dest="map_k", type=int, help="mAP@k (label datasets: default 100)")
    p.add_argument("--truncate", type=int, metavar="K", help="score each descriptor's first K elements, "
                   "re-L2-normalised (smaller descriptors, e.g. from a 4096-dim whitening)")
    p.add_argument("--split", help="split to evaluate (with --manifest, default: its only split, else test, "
                   "else val)")
    p.add_argument("--search-mode", dest="search_mode", help="auto|flat|cpu_shards|gpu_shards|stream|ray")
    p.add_argument("--images-root", dest="images_root", help="folder the image ids are relative to (HTML report)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_eval_cmd)
