"""What-if runs of the demo's training, in one process: validation and test Recall@1/5 after every epoch.

The loop is `sare train`'s own (`sare_core.training.loop.run_epochs`: re-mining before each chunk, the same
tuple images, loss, SGD and step schedule) in one process without Ray and DDP, `--batch` tuples per step
(8 = the demo's 2 workers x 4). Batches are composed differently from the 2-worker run, so its numbers
match a `sare demo` run in trend, not to the digit. Descriptors are raw
NetVLAD (no whitening); the first epoch row (0) is the k-means initialisation.

Used to choose configs/demo.yaml (docs/DESIGN.md, "The demo's settings"):

    .venv/bin/python benchmarks/train_diagnostic.py --city runs/demo/city                      # demo settings
    .venv/bin/python benchmarks/train_diagnostic.py --city runs/demo/city --train-from blocks5
    .venv/bin/python benchmarks/train_diagnostic.py --city runs/demo/city --color-jitter 0.4
    .venv/bin/python benchmarks/train_diagnostic.py --city runs/demo/city --loss sare_ind --kernel exponential
    .venv/bin/python benchmarks/train_diagnostic.py --city runs/demo/city --whitening-dims 256,512

Each run takes ~7 minutes on 2 cores (evaluating val and test after every epoch is half of it) and writes
results/train_diagnostic/<label>.json.
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

from pipelines.train.driver import ensure_initial_model  # noqa: E402
from sare_core.data.sources import open_splits  # noqa: E402
from sare_core.evaluation.recall import recall_at_n  # noqa: E402
from sare_core.models.inference import embed_paths  # noqa: E402
from sare_core.models.io import load_model  # noqa: E402
from sare_core.training.checkpoint import TrainingState  # noqa: E402
from sare_core.training.config import TrainConfig  # noqa: E402
from sare_core.training.loop import run_epochs  # noqa: E402
from sare_core.whitening import fit_pca_whitening  # noqa: E402


def recall(model, split, ns=(1, 5)) -> dict[int, float]:
    """Raw-descriptor Recall@N (fractions) of `split`'s queries against its database."""
    model.eval()
    db = embed_paths(model, split.db_paths, batch_size=64)
    q = embed_paths(model, split.q_paths, batch_size=64)
    return recall_at_n(q, db, split.positives(), ns=ns, mode="flat")


def whitening_check(model, train, test, dims: list[int], images: int, seed: int) -> dict[str, float]:
    """Test Recall@1 (fraction) with PCA whitening fitted on `images` training database images, per dim
    (`fit_whitening`'s sample), and with PCA to the first dim without whitening."""
    from sare_core.training.fitting import whitening_rows

    model.eval()
    rows = whitening_rows(train.num_db, images, seed)
    fit_on = embed_paths(model, [train.db_paths[i] for i in rows], batch_size=64)
    db = torch.from_numpy(embed_paths(model, test.db_paths, batch_size=64))
    q = torch.from_numpy(embed_paths(model, test.q_paths, batch_size=64))
    out = {}
    variants = [(f"whitened_{d}", d, True) for d in dims] + [(f"pca_{dims[0]}", dims[0], False)]
    for name, dim, whiten in variants:
        w = fit_pca_whitening(fit_on, min(dim, len(fit_on) - 1), whiten=whiten).float()
        with torch.no_grad():
            r = recall_at_n(w(q).numpy(), w(db).numpy(), test.positives(), ns=(1,), mode="flat")
        out[f"test_recall@1_{name}"] = r[1]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--city", required=True, help="folder of a synthetic city (its manifest.parquet)")
    p.add_argument("--label", help="name of the results file (default: from the options)")
    p.add_argument("--loss", default="sare_joint")
    p.add_argument("--kernel", default="gaussian")
    p.add_argument("--temperature", type=float, default=None, help="SARE's temperature (default 1)")
    p.add_argument("--eval-splits", default="val,test", help="splits scored after every epoch (val: the choice)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-step", type=int, default=5, help="epochs between halvings of the learning rate")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--queries-per-epoch", type=int, default=400, help="0: all training queries")
    p.add_argument("--chunk", type=int, default=400)
    p.add_argument("--pool", type=int, default=500)
    p.add_argument("--negatives", type=int, default=10)
    p.add_argument("--batch", type=int, default=8, help="tuples per step")
    p.add_argument("--color-jitter", type=float, default=0.0)
    p.add_argument("--train-from", default="blocks4")
    p.add_argument("--clusters", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--whitening-dims", default="", help="e.g. 256,512: after the first and the last epoch, test "
                   "R@1/5 also with PCA whitening to these dims (and PCA without whitening to the first)")
    p.add_argument("--whitening-images", type=int, default=1000, help="training database images to fit on")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    manifest = os.path.join(args.city, "manifest.parquet")
    config = TrainConfig(
        dataset=manifest, seed=args.seed, centroid_images=300, loss={"name": args.loss, "kernel": args.kernel,
                                                                  **({"temperature": args.temperature}
                                                                     if args.temperature is not None else {})},
        lr=args.lr, lr_step_epochs=args.lr_step, epochs=args.epochs, max_train_queries=args.queries_per_epoch or None,
        chunk_size=args.chunk, negative_pool=args.pool, num_negatives=args.negatives, batch_size=args.batch,
        color_jitter=args.color_jitter, extract_batch_size=64,
        model={"backbone": "efficientnet_lite0", "weights": "imagenet", "cut": "blocks6",
               "train_from": args.train_from, "num_clusters": args.clusters, "whitening_dim": None,
               "image_size": [120, 160]})
    splits = open_splits(manifest)
    train = splits["train"]
    cache = os.path.join(args.city, f"diagnostic_init_{args.train_from}_{args.clusters}_{args.seed}.pt")
    state = TrainingState.start(load_model(ensure_initial_model(config, train, cache)), config)
    dims = [int(d) for d in args.whitening_dims.split(",") if d]
    history: list[dict] = []
    started = time.perf_counter()

    def evaluate(model, epoch: int) -> dict:
        """Validation and test Recall@1/5 of every epoch (this diagnostic looks at test; `sare train` never does)."""
        row = {}
        for name in args.eval_splits.split(","):
            if name in splits:
                r = recall(model, splits[name])
                row.update({f"{name}_recall@1": r[1], f"{name}_recall@5": r[5]})
        if dims and "test" in splits and epoch in (0, args.epochs):
            row.update(whitening_check(model, train, splits["test"], dims, args.whitening_images, args.seed))
        return {**row, "val_recall@1": row.get("val_recall@1", 0.0)}

    def report(row: dict, _state) -> None:
        nonlocal started
        row = {**row, "train_seconds": time.perf_counter() - started}
        history.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        started = time.perf_counter()

    run_epochs(state, config, train, splits.get("val", train), report, validate_fn=evaluate)

    label = args.label or (f"{args.loss}_{args.kernel}_lr{args.lr:g}_{args.train_from}_q{args.queries_per_epoch}"
                           f"_jitter{args.color_jitter:g}_seed{args.seed}"
                           + (f"_t{args.temperature:g}" if args.temperature is not None else ""))
    out = os.path.join(REPO, "results", "train_diagnostic", f"{label}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"args": vars(args), "load_average_end": os.getloadavg(), "history": history}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
