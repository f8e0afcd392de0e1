"""`sare explain --model CKPT IMAGE... [--compare CKPT2] [--match IMG ...|--database MANIFEST] --out DIR`."""

from __future__ import annotations

import argparse


def _explain_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .maps import ExplainConfig, run

    data: dict = {"models": [args.model, *(args.compare or [])], "images": list(args.images), "out": args.out}
    if args.match:
        data["matches"] = list(args.match)
    for key in ("database", "split"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.image_size:
        height, _, width = args.image_size.partition("x")
        try:
            data["image_size"] = (int(height), int(width))
        except ValueError:
            raise ValueError(f"--image-size {args.image_size!r}: give HEIGHTxWIDTH, e.g. 64x128") from None
    config = load_config(ExplainConfig, None, list(args.set), base=data)
    record = run(config)
    for entry in record["images"]:
        sims = ", ".join(f"{n} cos {v['cosine']:.3f}" for n, v in entry["per_model"].items() if v["cosine"] is not None)
        print(f"{entry['png']}" + (f"  ({sims})" if sims else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="heat maps of where each image's descriptor draws its evidence, model beside model",
        description="For each image and model: each feature-map location's share of the pooled NetVLAD/GeM "
        "vector, and (with a match) its share of the cosine similarity with the match's descriptor, drawn "
        "over the image; one PNG per image (rows: models), maps.npz, explain.json.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True, metavar="[NAME=]CKPT", help="saved model (e.g. runs/X/model.pt)")
    p.add_argument("--compare", action="append", metavar="[NAME=]CKPT",
                   help="another model drawn beside it (e.g. runs/X/initial_model.pt, the off-the-shelf start)")
    p.add_argument("--match", action="append", metavar="IMAGE",
                   help="the image each IMAGE is compared with (repeat, one per IMAGE, in order)")
    p.add_argument("--database", help="manifest whose database images are searched for each IMAGE's best match")
    p.add_argument("--split", help="split of --database (default: its only split, else test, else val)")
    p.add_argument("--image-size", dest="image_size", help="HEIGHTxWIDTH for pretrained:NAME models")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_explain_cmd)
