"""`sare locate --model M --index INDEX PHOTO... [--k 10] [--out DIR]`."""

from __future__ import annotations

import argparse
import json


def _locate_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .locate import LocateConfig, run

    base = {"model": args.model, "index": args.index, "photos": list(args.photos), "k": args.k,
            "radius": args.radius, "out": args.out}
    results = run(load_config(LocateConfig, None, args.set, base=base))
    for r in results:
        p = r["position"]
        where = (f"({p['utm_east']:.1f}, {p['utm_north']:.1f}) +- {p['spread']:.1f}, support {p['support']:.2f}"
                 if p else "no position")
        best = r["matches"][0]["id"] if r["matches"] else "-"
        print(f"{r['photo']}: {where}; best match {best}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("locate", help="where was this photo taken? matches and a position from an index",
                              description="Run each photo through the model, search its descriptor in the index "
                              "(built from the same model's descriptors: others are refused) and estimate its "
                              "position from the densest group of matches. --out writes locate.json, a PNG "
                              "sheet per photo and locate.html.")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--model", required=True, help="saved model (e.g. runs/X/model.pt)")
    p.add_argument("--index", required=True, help="index folder (`sare index build`)")
    p.add_argument("--k", type=int, default=10, help="matches per photo")
    p.add_argument("--radius", type=float, default=25.0, help="matches this close agree on a place")
    p.add_argument("--out", help="folder for locate.json and the sheets")
    p.add_argument("--json", action="store_true", help="also print the full JSON")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_locate_cmd)
