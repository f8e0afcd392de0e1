"""Which input size and backbone cut suit Nordland's 64x32 frames? Off-the-shelf recall and speed.

    .venv/bin/python benchmarks/nordland_manifest.py && .venv/bin/python benchmarks/nordland_resolution.py
    # -> results/nordland_resolution.json

For each input scale (the 64x32 frames upscaled 1x, 2x, 3x, 4x by the model's own preprocessing) and each
EfficientNet-Lite0 (ImageNet) cut (blocks4: stride 16, 112 channels; blocks5 / blocks6: stride 32, 192 / 320
channels), the validation range of data/nordland/manifest.parquet (winter queries against the summer
database, positives within +-2 frames) is scored with GeM (p=3) and with NetVLAD (K clusters; the initial
model `sare train` would build: `sare_core.training.fitting.initial_model`, k-means on local descriptors
of 300 training-range summer images), no whitening; and each model's images/s (batch 32, this process's
torch threads) over the validation images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.data.manifest import read_manifest_splits  # noqa: E402
from sare_core.evaluation.recall import recall_at_n  # noqa: E402
from sare_core.models.config import ModelConfig  # noqa: E402
from sare_core.models.inference import embed_paths  # noqa: E402
from sare_core.training.fitting import initial_model  # noqa: E402

CUTS = ("blocks4", "blocks5", "blocks6")


def score(model, val) -> tuple[dict, float]:
    """Recall@1/5/10 (percent) of `val` and images/s of the embedding."""
    started = time.perf_counter()
    db = embed_paths(model, val.db_paths, batch_size=32)
    q = embed_paths(model, val.q_paths, batch_size=32)
    seconds = time.perf_counter() - started
    recalls = recall_at_n(q, db, val.positives(), ns=(1, 5, 10))
    return {n: 100 * v for n, v in recalls.items()}, (val.num_db + val.num_q) / seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=os.path.join(REPO, "data", "nordland", "manifest.parquet"))
    parser.add_argument("--scales", default="1,2,3,4")
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--out", default=os.path.join(REPO, "results", "nordland_resolution.json"))
    args = parser.parse_args(argv)
    splits = read_manifest_splits(args.manifest)
    train, val = splits["train"], splits["val"]
    rows = []
    for scale in [int(s) for s in args.scales.split(",")]:
        size = (32 * scale, 64 * scale)
        for cut in CUTS:
            result = {"scale": scale, "size_hw": list(size), "cut": cut}
            for pooling in ("gem", "netvlad"):
                config = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", cut=cut, train_from="none",
                                     pooling=pooling, num_clusters=args.clusters, whitening_dim=None, image_size=size)
                model, _ = initial_model(config, train.db_paths, centroid_images=300, per_image=50, seed=0)
                result[pooling], result[f"{pooling}_images_per_s"] = score(model, val)
            rows.append(result)
            print(f"{scale}x {size[1]}x{size[0]} {cut}: GeM R@1/5/10 "
                  f"{result['gem'][1]:.1f}/{result['gem'][5]:.1f}/{result['gem'][10]:.1f}  NetVLAD({args.clusters}) "
                  f"{result['netvlad'][1]:.1f}/{result['netvlad'][5]:.1f}/{result['netvlad'][10]:.1f}  "
                  f"{result['netvlad_images_per_s']:.0f} img/s", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"manifest": args.manifest, "clusters": args.clusters, "queries": val.num_q,
                   "database": val.num_db, "validation_frames": [int(val.db_utm[:, 0].min()),
                                                                int(val.db_utm[:, 0].max()) + 1],
                   "torch_threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
