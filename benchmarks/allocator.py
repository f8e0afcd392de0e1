"""What `sare_core.allocator.keep_freed_memory` is worth: the same CPU work in fresh processes, with glibc's
malloc as it comes (SARE_KEEP_FREED_MEMORY=0) and with the thresholds raised ("keep", what the pipelines'
processes do), alternating, the order reversed every other round.

Workloads, each one thread, in a process of its own (the settings act per process, as in Ray's workers):
- embed_lite0: `embed_paths` over 480 images of the small city (160x120 JPEGs), the demo's model
  (ImageNet EfficientNet-Lite0 to blocks6, NetVLAD 16 clusters, 120x160), batches of 32: what re-mining,
  validation and the extraction actors do;
- embed_vgg16: the same over 24 of those images with VGG16 (conv5_3) + NetVLAD 64 at 480x640, batches of 8;
- train_steps_lite0: 40 training steps of the demo's trainable layers (blocks4-6 + NetVLAD, from frozen
  maps, as the frozen-feature cache feeds them): 4 tuples of 7 images, SARE joint loss, backward, SGD;
- city_render: `render_images` over 300 images of the small city, 6 per call (the demo's render batch);
- demo (only when named in --workloads): `sare demo` (seed 0) into a fresh folder, as `make demo` runs it;
  its wall time and stage seconds (demo_summary.json), and its recall (which must not move).

Per run: wall, user and system CPU seconds, minor page faults and the peak resident memory (ru_maxrss) of the
timed part's process. Ratios keep / as-it-comes per round, and their medians.

    nice -n 0 .venv/bin/python benchmarks/allocator.py --rounds 3        # results/allocator.json
    nice -n 0 .venv/bin/python benchmarks/allocator.py --rounds 2 --workloads demo \
        --out results/allocator_demo.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from alternating import alternating_rounds, medians, save  # noqa: E402

SETTINGS = ("as_it_comes", "keep")
WORKLOADS = ("embed_lite0", "embed_vgg16", "train_steps_lite0", "city_render")
ALL_WORKLOADS = WORKLOADS + ("demo",)
DEMO_MODEL = {"backbone": "efficientnet_lite0", "weights": "imagenet", "cut": "blocks6", "train_from": "blocks4",
              "num_clusters": 16, "whitening_dim": None, "image_size": (120, 160)}
VGG16_MODEL = {"backbone": "vgg16", "weights": "none", "num_clusters": 64, "whitening_dim": None,
               "image_size": (480, 640)}
IMAGES = 480
VGG16_IMAGES = 24
KEYS = ("wall_s", "user_s", "sys_s", "minor_faults", "max_rss_mb")


def write_images(folder: str) -> list[str]:
    """IMAGES JPEGs of the small city's test database (seed 0), rendered once per benchmark run."""
    import numpy as np
    from PIL import Image

    from sare_core.data.synth.city import render_images

    paths = []
    for lo in range(0, IMAGES, 48):
        images, _ = render_images("small", 0, "test", "database", np.arange(lo, lo + 48))
        for i, image in enumerate(images):
            paths.append(os.path.join(folder, f"{lo + i:05d}.jpg"))
            Image.fromarray(image).save(paths[-1], quality=90)
    return paths


def _embed(config: dict, paths: list[str], batch_size: int):
    import torch

    from sare_core.models.embedding import build_model
    from sare_core.models.inference import embed_paths

    torch.manual_seed(0)
    model = build_model(config).eval()
    embed_paths(model, paths[:batch_size], batch_size=batch_size)  # warm: first-call set-up is not timed
    return lambda: embed_paths(model, paths, batch_size=batch_size)


def _train_steps(steps: int = 40, tuples: int = 4, negatives: int = 5):
    import torch

    from sare_core.losses import LossSpec, build_loss
    from sare_core.models.embedding import build_model

    torch.manual_seed(0)
    model = build_model(DEMO_MODEL).train()
    with torch.no_grad():
        frozen_shape = model.backbone.frozen(torch.zeros(1, 3, *DEMO_MODEL["image_size"])).shape[1:]
    loss_fn = build_loss(LossSpec(name="sare_joint", kernel="gaussian", temperature=0.4))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    maps = torch.randn(steps, tuples * (2 + negatives), *frozen_shape)

    def run():
        for step in range(steps):
            desc = model(maps[step], from_frozen=True)
            loss = loss_fn(desc[:tuples], desc[tuples:2 * tuples], desc[2 * tuples:].reshape(tuples, negatives, -1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return run


def _city_render(images: int = 300, per_call: int = 6):
    import numpy as np

    from sare_core.data.synth.city import render_images

    render_images("small", 0, "train", "database", np.arange(0, per_call))
    return lambda: [render_images("small", 0, "train", "database", np.arange(lo, lo + per_call))
                    for lo in range(per_call, per_call + images, per_call)]


def child(workload: str, image_folder: str) -> dict:
    """One timed run in this (fresh) process, the allocator set as the pipelines set it."""
    import torch

    from sare_core.allocator import keep_freed_memory

    applied = keep_freed_memory()
    torch.set_num_threads(1)
    paths = sorted(os.path.join(image_folder, n) for n in os.listdir(image_folder))
    run = {"embed_lite0": lambda: _embed(DEMO_MODEL, paths, 32),
           "embed_vgg16": lambda: _embed(VGG16_MODEL, paths[:VGG16_IMAGES], 8),
           "train_steps_lite0": _train_steps, "city_render": _city_render}[workload]()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt, "max_rss_mb": after.ru_maxrss / 1024,
            "thresholds_set": applied}


def demo_run(env: dict, folder: str) -> dict:
    """`sare demo` (seed 0) into `folder`, made afresh; Ray's processes inherit `env`."""
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "sare"), "demo", "--set", f"out_dir={folder}"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    with open(os.path.join(folder, "demo_summary.json")) as f:
        summary = json.load(f)
    shutil.rmtree(folder, ignore_errors=True)
    return {"wall_s": wall, "demo_minutes": summary["minutes"], "stage_seconds": summary["stage_seconds"],
            "recall@1": summary["recall@1"], "epoch_seconds": [e.get("seconds") for e in summary["epochs"]],
            "epoch_mining_seconds": [e.get("mining_seconds") for e in summary["epochs"]]}


def one_run(workload: str, setting: str, image_folder: str) -> dict:
    env = {**os.environ, "SARE_KEEP_FREED_MEMORY": "1" if setting == "keep" else "0"}
    if workload == "demo":
        return demo_run(env, os.path.join(image_folder, "demo"))
    out = subprocess.run([sys.executable, __file__, "--child", workload, "--images", image_folder], cwd=REPO,
                         env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["thresholds_set"] != (setting == "keep"):
        raise RuntimeError(f"{workload} {setting}: the thresholds were {'' if result['thresholds_set'] else 'not '}set")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=ALL_WORKLOADS)
    p.add_argument("--out", default=os.path.join(REPO, "results", "allocator.json"))
    p.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    p.add_argument("--images", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.images)))
        return 0
    from sare_core.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD

    result = {"command": "benchmarks/allocator.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "thresholds_kept": {"mmap_bytes": MMAP_THRESHOLD, "trim_bytes": TRIM_THRESHOLD},
              "images": {"embed_lite0": IMAGES, "embed_vgg16": VGG16_IMAGES}, "workloads": {}}
    with tempfile.TemporaryDirectory() as folder:
        write_images(folder)
        for workload in args.workloads:
            rounds = alternating_rounds(SETTINGS, args.rounds, functools.partial(one_run, workload, image_folder=folder),
                                        label=f"{workload} ")
            ratios = [rd["keep"]["wall_s"] / rd["as_it_comes"]["wall_s"] for rd in rounds]
            keys = ("wall_s", "demo_minutes") if workload == "demo" else KEYS
            result["workloads"][workload] = {"rounds": rounds, "medians": medians(rounds, SETTINGS, keys),
                                             "wall_ratio_keep_by_round": ratios,
                                             "wall_ratio_keep_median": statistics.median(ratios)}
    result["summary"] = {w: {"wall_ratio_keep_median": round(v["wall_ratio_keep_median"], 3),
                             **{f"{s}_{k}": round(v["medians"][s][k], 2) for s in SETTINGS
                                for k in ("wall_s", "sys_s", "max_rss_mb") if k in v["medians"][s]}}
                         for w, v in result["workloads"].items()}
    save(result, args.out, ("summary",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
