"""`sare serve --model M --index INDEX [--port 8000] [--replicas N] [--host 127.0.0.1]`."""

from __future__ import annotations

import argparse


def _serve_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .service import ServeConfig, run

    base = {"model": args.model, "index": args.index, "host": args.host, "port": args.port,
            "replicas": args.replicas}
    run(load_config(ServeConfig, args.config, args.set, base=base))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="the localiser as a web service (Ray Serve): POST a photo, get where",
                              description="Serve the model and index on Ray Serve (loopback by default): POST an "
                              "image to /locate for JSON matches and a position; open / in a browser to upload "
                              "a photo and see its matches on a map.")
    p.add_argument("--model", help="saved model")
    p.add_argument("--index", help="index folder of that model's descriptors")
    p.add_argument("--host", help="default 127.0.0.1 (loopback)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--replicas", type=int, help="default 1")
    p.add_argument("--config", help="YAML ServeConfig")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. max_batch_size=16")
    p.set_defaults(func=_serve_cmd)
