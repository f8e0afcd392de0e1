"""Which input size and backbone cut suit Nordland's 64x32 frames? Off-the-shelf recall and speed.

    .venv/bin/python benchmarks/nordland_manifest.py && .venv/bin/python benchmarks/nordland_resolution.py
    # -> results/nordland_resolution.json

For each input scale (the 64x32 frames upscaled bilinearly by 1x, 2x, 3x, 4x) and each EfficientNet-Lite0
(ImageNet) cut (blocks4: stride 16, 112 channels; blocks5 / blocks6: stride 32, 192 / 320 channels), the
validation range of data/nordland/manifest.parquet (winter queries against the summer database, positives
within +-2 frames) is scored with GeM (p=3) and with NetVLAD (K clusters, k-means on local descriptors of
300 training-range summer images), no whitening; and the forward pass's images/s (batch 32, this process's
torch threads) up to each cut. One forward pass per scale gives all three cuts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.data import read_manifest_splits  # noqa: E402
from sare_core.evaluation import recall_at_n  # noqa: E402
from sare_core.models import ModelConfig, build_model, kmeans_centroids, load_rgb  # noqa: E402
from sare_core.models.gem import GeM  # noqa: E402
from sare_core.models.netvlad import NetVLAD  # noqa: E402

CUTS = {"blocks4": 5, "blocks5": 6, "blocks6": 7}  # position in [stem, blocks0, ..., blocks6]


@torch.no_grad()
def feature_maps(layers, pixels: np.ndarray, size: tuple[int, int], batch: int = 32):
    """{cut: (N, C, h, w) float32} for uint8 images (N, H, W, 3) resized to `size` (height, width)."""
    out = {c: [] for c in CUTS}
    seconds = 0.0
    warm = torch.zeros(min(batch, len(pixels)), 3, *size)
    for layer in layers:  # warm-up: first-call allocations are not throughput
        warm = layer(warm)
    for start in range(0, len(pixels), batch):
        x = torch.from_numpy(pixels[start : start + batch]).permute(0, 3, 1, 2).float().div(255.0)
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = (x - 0.5) / 0.5
        t0 = time.perf_counter()
        for i, layer in enumerate(layers):
            x = layer(x)
            for cut, position in CUTS.items():
                if i == position:
                    out[cut].append(x.clone())
        seconds += time.perf_counter() - t0
    return {c: torch.cat(v) for c, v in out.items()}, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=os.path.join(REPO, "data", "nordland", "manifest.parquet"))
    parser.add_argument("--scales", default="1,2,3,4")
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--out", default=os.path.join(REPO, "results", "nordland_resolution.json"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    splits = read_manifest_splits(args.manifest)
    train, val = splits["train"], splits["val"]
    rng = np.random.default_rng(0)
    kmeans_rows = np.sort(rng.choice(train.num_db, 300, replace=False))
    load = lambda paths: np.stack([np.asarray(load_rgb(p)) for p in paths])  # noqa: E731
    db_pix, q_pix, km_pix = load(val.db_paths), load(val.q_paths), load([train.db_paths[i] for i in kmeans_rows])
    positives = val.positives()
    model = build_model(ModelConfig(backbone="efficientnet_lite0", weights="imagenet", cut="blocks6",
                                    train_from="none", pooling="gem", whitening_dim=None)).eval()
    layers = list(model.backbone.frozen) + list(model.backbone.trainable)
    height, width = db_pix.shape[1:3]
    rows = []
    for scale in [int(s) for s in args.scales.split(",")]:
        size = (height * scale, width * scale)
        db_maps, seconds = feature_maps(layers, db_pix, size)
        q_maps, _ = feature_maps(layers, q_pix, size)
        km_maps, _ = feature_maps(layers, km_pix, size)
        for cut in CUTS:
            channels, h, w = db_maps[cut].shape[1:]
            gem = GeM(channels)
            result = {"scale": scale, "size_hw": list(size), "cut": cut, "map_hw": [h, w],
                      "images_per_s_to_blocks6": len(db_pix) / seconds}
            with torch.no_grad():
                r = recall_at_n(gem(q_maps[cut]).numpy(), gem(db_maps[cut]).numpy(), positives, ns=(1, 5, 10))
            result["gem"] = {n: 100 * v for n, v in r.items()}
            local = torch.nn.functional.normalize(km_maps[cut], dim=1).flatten(2).transpose(1, 2)
            take = [one[torch.from_numpy(rng.choice(h * w, min(h * w, 50), replace=False))] for one in local]
            centroids = kmeans_centroids(torch.cat(take).numpy(), args.clusters, seed=0)
            vlad = NetVLAD(args.clusters, channels)
            vlad.init_from_centroids(centroids)
            with torch.no_grad():
                r = recall_at_n(vlad(q_maps[cut]).numpy(), vlad(db_maps[cut]).numpy(), positives, ns=(1, 5, 10))
            result["netvlad"] = {n: 100 * v for n, v in r.items()}
            rows.append(result)
            print(f"{scale}x {size[1]}x{size[0]} {cut} map {h}x{w}: GeM R@1/5/10 "
                  f"{result['gem'][1]:.1f}/{result['gem'][5]:.1f}/{result['gem'][10]:.1f}  NetVLAD({args.clusters}) "
                  f"{result['netvlad'][1]:.1f}/{result['netvlad'][5]:.1f}/{result['netvlad'][10]:.1f}  "
                  f"{result['images_per_s_to_blocks6']:.0f} img/s to blocks6", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"manifest": args.manifest, "clusters": args.clusters, "queries": val.num_q,
                   "database": val.num_db, "torch_threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
