"""What the frozen-feature cache saves: the frozen layers' share of a forward pass and a cached training step's
cost against a full one, for a model config (default: the demo's EfficientNet-Lite0 at 120x160 from blocks4).

    .venv/bin/python benchmarks/frozen_cache.py                      # -> results/frozen_cache.json
    .venv/bin/python benchmarks/frozen_cache.py --train-from blocks3 --image-size 64 128 --label nordland

One process, --threads torch threads, batches of --batch random images; each timing is the median of
--repeats passes after one warm-up, measured alternately in the same run (a ratio, not an absolute speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.models import ModelConfig, build_model  # noqa: E402


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model options of the benchmarks that time the demo's model (default: EfficientNet-Lite0 at
    120x160, cut at blocks6, trained from blocks4, NetVLAD 16)."""
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--cut", default="blocks6")
    p.add_argument("--train-from", default="blocks4")
    p.add_argument("--image-size", type=int, nargs=2, default=[120, 160])
    p.add_argument("--clusters", type=int, default=16)


def model_from_arguments(args):
    """The model `add_model_arguments`' options describe, without whitening."""
    return build_model(ModelConfig(backbone=args.backbone, weights=args.weights, cut=args.cut,
                                   train_from=args.train_from, num_clusters=args.clusters, whitening_dim=None,
                                   image_size=tuple(args.image_size)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = model_from_arguments(args)
    images = torch.randn(args.batch, 3, *args.image_size)
    with torch.no_grad():
        maps = model.backbone.frozen(images)
    params = model.trainable_parameters()

    def frozen_forward():
        with torch.no_grad():
            model.backbone.frozen(images)

    def trainable_forward():
        with torch.no_grad():
            model(maps, from_frozen=True)

    def full_step():
        model.zero_grad(set_to_none=True)
        model(images).sum().backward()

    def cached_step():
        model.zero_grad(set_to_none=True)
        model(maps, from_frozen=True).sum().backward()

    model.train()
    cases = {"frozen_forward": frozen_forward, "trainable_forward": trainable_forward, "full_step": full_step,
             "cached_step": cached_step}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():
        f()  # warm-up
    for _ in range(args.repeats):  # alternating, so a change in the machine's load hits every case alike
        for name, f in cases.items():
            started = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - started)
    median = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "model": {"backbone": args.backbone, "cut": args.cut, "train_from": args.train_from,
                  "image_size": args.image_size},
        "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
        "seconds_median": median,
        "frozen_share_of_forward": median["frozen_forward"] / (median["frozen_forward"] + median["trainable_forward"]),
        "cached_step_over_full_step": median["cached_step"] / median["full_step"],
        "map_bytes_per_image": maps[0].numel() * 4, "trainable_parameters": sum(p.numel() for p in params),
        "host": platform.node(), "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/frozen_cache.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    path = os.path.join(REPO, "results", f"frozen_cache{'_' + args.label if args.label else ''}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("frozen_share_of_forward", "cached_step_over_full_step",
                                          "map_bytes_per_image")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
