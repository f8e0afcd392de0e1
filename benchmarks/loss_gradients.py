"""What each loss does to the same training tuples: gradient size, the step SGD takes, how many negatives
push, and (for trained models) whether the descriptors collapsed. The measured side of "why does loss A
train better than loss B here".

    .venv/bin/python benchmarks/loss_gradients.py --out results/nordland_study/gradients.json \\
        --config triplet=configs/nordland_triplet.yaml --config sare_joint=configs/nordland_sare_joint_gaussian.yaml \\
        --model triplet=runs/.../model.pt --model sare_joint=runs/.../model.pt

Every config must share the dataset, model and mining settings of the first (the study's configs all come
from configs/nordland_base.yaml); each brings its own loss and learning rate. In one process, no Ray:

1. the first config's initial model (k-means NetVLAD, seed `seed`) mines `--queries` random training queries
   exactly as epoch 1 does (fresh pools, the `num_negatives` hardest);
2. for each config, from that same initial model, batches of `batch_size` tuples go forward in training mode
   and backward through the loss. Per batch: the loss, the L2 norm of the gradient over the trainable
   parameters (|g|), the SGD step lr * |g| (before momentum, which multiplies a steady step by 1/(1 - m)),
   how the push on the negatives is spread (participation ratio of the per-negative descriptor gradient
   norms: N when all N push equally, 1 when one does; 0 when none does), the share of tuples with a zero
   gradient, and the cosine of the parameter gradient with the first config's on the same batch;
3. for each `--model` (a trained model, e.g. a study's final model), descriptors of the first config's
   validation split: the mean cosine between distinct database images (1 = collapsed to a point), the
   participation ratio of the descriptor covariance's eigenvalues (effective dimensions; low = collapsed
   to a few directions), and the mean query-positive and query-hardest-negative cosines.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines.train.driver import ensure_initial_model  # noqa: E402
from sare_core.config_io import load_config  # noqa: E402
from sare_core.data.sources import open_splits  # noqa: E402
from sare_core.mining import GroundTruthForTraining, MiningState, mine_chunk, plan_chunk  # noqa: E402
from sare_core.models.inference import embed_paths  # noqa: E402
from sare_core.models.io import load_model  # noqa: E402
from sare_core.training.config import TrainConfig  # noqa: E402
from sare_core.training.loop import loss_function  # noqa: E402
from sare_core.training.tuples import TupleImages  # noqa: E402

SHARED = ("dataset", "model", "negative_pool", "num_negatives", "batch_size", "seed", "centroid_images",
          "centroid_descriptors_per_image", "freeze_batchnorm")


def participation_ratio(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2 of non-negative weights: how many of them carry the total (0 if all are 0)."""
    total = float(weights.sum())
    squares = float((weights ** 2).sum())
    return total * total / squares if squares > 0 else 0.0


def mine_tuples(config: TrainConfig, model, train, queries: int):
    """Epoch-1 tuples of `queries` random training queries, mined with `model`."""
    gt = GroundTruthForTraining.from_dataset(train)
    chosen = np.random.default_rng([config.seed, 99]).permutation(gt.queries)[:queries]
    plan = plan_chunk(gt, train.num_db, chosen, MiningState(), config.negative_pool,
                      np.random.default_rng([config.seed, 1, 0]))
    q_desc = embed_paths(model, [train.q_paths[i] for i in plan.queries], config.extract_batch_size)
    c_desc = embed_paths(model, [train.db_paths[i] for i in plan.cache_db], config.extract_batch_size)
    return mine_chunk(plan, q_desc, c_desc, MiningState(), config.num_negatives)


def loss_gradients(config: TrainConfig, initial, tuples, images: TupleImages, reference: list | None) -> dict:
    """Per-batch gradient figures of `config`'s loss from the model `initial` (left unchanged)."""
    model = copy.deepcopy(initial)
    model.backbone.freeze_batchnorm = config.freeze_batchnorm
    model.train()
    params = [p for p in model.trainable_parameters() if p.requires_grad]
    loss_fn = loss_function(config)
    size, n_neg = config.batch_size, config.num_negatives
    rows: list[dict] = []
    flat_grads = []
    for start in range(0, len(tuples) - size + 1, size):
        batch = tuples.subset(np.arange(start, start + size))
        desc = model(images(batch.queries, batch.positives, batch.negatives))
        desc.retain_grad()
        loss = loss_fn(desc[:size], desc[size:2 * size], desc[2 * size:].reshape(size, n_neg, -1))
        for p in params:
            p.grad = None
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
        norm = float(grad.norm())
        per_negative = desc.grad[2 * size:].reshape(size, n_neg, -1).norm(dim=-1).numpy()  # (B, N)
        per_query = desc.grad[:size].norm(dim=-1).numpy()
        cosine = None
        if reference is not None:
            ref = reference[len(rows)]
            cosine = float(torch.dot(grad, ref) / (grad.norm() * ref.norm()).clamp_min(1e-30))
        rows.append({
            "loss": float(loss), "grad_norm": norm, "sgd_step": config.lr * norm,
            "negatives_pushing": float(np.mean([participation_ratio(w) for w in per_negative])),
            "zero_gradient_tuples": float(np.mean(per_query == 0)),
            "cosine_with_first": cosine,
        })
        flat_grads.append(grad.detach().clone())
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if rows[0][k] is not None}
    summary.update({f"{k}_median": float(np.median([r[k] for r in rows])) for k in ("grad_norm", "sgd_step")})
    return {"lr": config.lr, "loss": config.loss.model_dump(), "batches": len(rows), "mean": summary,
            "grads": flat_grads}


def descriptor_spread(model_path: str, split) -> dict:
    """Collapse figures of a trained model's descriptors of `split` (L2-normalised, so cosine = dot)."""
    model = load_model(model_path)
    db = embed_paths(model, split.db_paths, batch_size=64).astype(np.float64)
    q = embed_paths(model, split.q_paths, batch_size=64).astype(np.float64)
    gram = db @ db.T
    n = len(db)
    mean_cos = float((gram.sum() - np.trace(gram)) / (n * (n - 1)))
    eig = np.clip(np.linalg.eigvalsh(np.cov(db.T) if db.shape[1] <= n else np.cov(db)), 0, None)
    sims = q @ db.T
    positives = split.positives()
    pos_cos, neg_cos = [], []
    for i, pos in enumerate(positives):
        if len(pos) == 0:
            continue
        mask = np.ones(n, bool)
        mask[pos] = False
        pos_cos.append(sims[i, pos].max())
        neg_cos.append(sims[i, mask].max())
    return {"mean_cosine_between_database_images": mean_cos,
            "effective_dimensions": participation_ratio(eig),
            "query_best_positive_cosine": float(np.mean(pos_cos)),
            "query_hardest_negative_cosine": float(np.mean(neg_cos)),
            "dims": int(db.shape[1])}


def named(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        if "=" not in value:
            raise SystemExit(f"{flag} {value!r}: expected NAME=PATH")
        name, path = value.split("=", 1)
        out[name] = path
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", required=True, metavar="NAME=YAML", help="a loss to compare")
    p.add_argument("--model", action="append", default=[], metavar="NAME=MODEL", help="a trained model to inspect")
    p.add_argument("--set", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="override one config, e.g. sare_t1:loss.temperature=1.0")
    p.add_argument("--queries", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    overrides: dict[str, list[str]] = {}
    for item in args.set:
        name, _, setting = item.partition(":")
        overrides.setdefault(name, []).append(setting)
    configs = {name: load_config(TrainConfig, os.path.join(REPO, path) if not os.path.isabs(path) else path,
                                 overrides.get(name, []))
               for name, path in named(args.config, "--config").items()}
    first_name, first = next(iter(configs.items()))
    for name, config in configs.items():
        for key in SHARED:
            if getattr(config, key) != getattr(first, key):
                raise SystemExit(f"--config {name}: {key} differs from {first_name}'s; the comparison needs it shared")

    splits = open_splits(os.path.join(REPO, first.dataset) if not os.path.isabs(first.dataset) else first.dataset)
    train = splits[first.train_split]
    cache = os.path.join(REPO, "runs", "loss_gradients", f"initial_{first.seed}.pt")
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    initial = load_model(ensure_initial_model(first, train, cache))
    tuples = mine_tuples(first, initial, train, args.queries)
    images = TupleImages(train, initial.preprocessor, 0.0, first.seed)

    results, reference = {}, None
    for name, config in configs.items():
        result = loss_gradients(config, initial, tuples, images, reference)
        if reference is None:
            reference = result["grads"]
        del result["grads"]
        results[name] = result
        m = result["mean"]
        print(f"{name:<24} lr {config.lr:.2e}  |g| {m['grad_norm']:.3g}  lr*|g| {m['sgd_step']:.3g}  "
              f"negatives pushing {m['negatives_pushing']:.2f}/{config.num_negatives}  "
              f"zero-gradient tuples {100 * m['zero_gradient_tuples']:.0f}%  "
              f"cos with {first_name} {m.get('cosine_with_first', float('nan')):.2f}", flush=True)

    spreads = {}
    val = splits.get(first.val_split)
    for name, path in named(args.model, "--model").items():
        spreads[name] = {"model": path, **descriptor_spread(path, val)}
        print(f"{name:<24} " + ", ".join(f"{k} {v:.3g}" for k, v in spreads[name].items() if isinstance(v, float)))

    record = {"command": " ".join(["python", "benchmarks/loss_gradients.py"] + (argv or sys.argv[1:])),
              "configs": {n: os.path.relpath(v, REPO) if os.path.isabs(v) else v
                          for n, v in named(args.config, "--config").items()},
              "overrides": args.set, "tuples": len(tuples), "queries": args.queries,
              "losses": results, "trained_models": spreads, "seconds": time.perf_counter() - started,
              "written": time.strftime("%Y-%m-%d %H:%M")}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
