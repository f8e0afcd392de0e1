"""`sare demo`: the main job, end to end on the embedded synthetic city with local Ray.

1. the synthetic city (small preset) -> JPEGs, dbStruct .mat files, a manifest;
2. NetVLAD centroids by k-means; SARE training with re-mining on Ray Train (CPU workers);
3. PCA whitening, when the config asks for it, for the off-the-shelf and the trained model alike (fitted on
   training database images; configs/demo.yaml leaves it out: on this city it cost the trained model
   recall, README.md);
4. Ray Data extraction of the test area with both models (one pass: the frozen prefix they share runs
   once per image) into Parquet stores;
5. exact-search evaluation of both: the seed-style table (off-the-shelf / trained / ratio), JSON, Recall@N
   curves, the HTML report of retrieved images, and the training curves.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sare_core.training.config import TrainConfig

from ..extract.config import ExtractSettings

log = logging.getLogger(__name__)

TRAIN_FIELDS_SET_BY_THE_DEMO = ("dataset", "storage_path")


class DemoConfig(BaseModel):
    """`sare demo`: the synthetic city `preset` (seed `seed`) under `out_dir`, training (`train`: a
    TrainConfig whose dataset and storage the demo sets under out_dir; its name defaults to "demo" and
    its seed to `seed`), extraction settings of the test area (`extract`) and the table's Recall@N."""

    model_config = ConfigDict(extra="forbid")
    out_dir: str = "runs/demo"
    preset: str = "small"
    seed: int = 0
    city_workers: int | None = None
    train: TrainConfig
    eval_ns: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 10])
    extract: ExtractSettings = Field(default_factory=ExtractSettings)
    locate_photos: int = Field(5, ge=0, description="test photos located at the end (`sare locate`) and printed "
                               "with where they really were")

    @model_validator(mode="before")
    @classmethod
    def _train_under_out_dir(cls, data):
        if not isinstance(data, dict):
            return data
        train = dict(data.get("train") or {})
        taken = [k for k in TRAIN_FIELDS_SET_BY_THE_DEMO if k in train]
        if taken:
            raise ValueError(f"train.{taken[0]}: set by the demo (under out_dir), not in its config")
        out = os.path.abspath(data.get("out_dir", "runs/demo"))
        train = {"name": "demo", "seed": data.get("seed", 0), **train,
                 "dataset": os.path.join(out, "city", "manifest.parquet"), "storage_path": os.path.join(out, "runs")}
        return {**data, "train": train}


def _city(config: DemoConfig) -> str:
    from sare_core.data.synth.city import city_is_current, generate_city

    city_dir = os.path.join(os.path.abspath(config.out_dir), "city")
    if city_is_current(city_dir, config.preset, config.seed):
        log.info("reusing the synthetic city at %s", city_dir)
        return os.path.join(city_dir, "manifest.parquet")
    if os.path.isfile(os.path.join(city_dir, "city.json")):
        log.info("the city at %s was made with other settings; generating it again", city_dir)
    started = time.perf_counter()
    generate_city(city_dir, config.preset, config.seed, config.city_workers)
    log.info("synthetic city (%s) in %.0f s", config.preset, time.perf_counter() - started)
    return os.path.join(city_dir, "manifest.parquet")


def _extract(config: DemoConfig, manifest: str, models: dict[str, str], stores: dict[str, str], split: str) -> None:
    """Extract `split` with every model (name -> model file) into its store (name -> folder), in one Ray Data
    pipeline (`run_many`: each image decoded once, the frozen prefix the models share run once). A store
    that the demo made earlier with another model (e.g. a run with more epochs selected another one) is
    replaced, an unfinished one resumed."""
    from sare_core.models.io import load_model, model_hash
    from sare_core.store import open_store
    from sare_core.store.errors import StoreNotCommittedError

    from ..extract.config import ExtractConfig
    from ..extract.pipeline import run_many

    for name, model_path in models.items():
        store = stores[name]
        if not os.path.isdir(store):
            continue
        try:
            previous = open_store(store, verify=False).metadata.model_hash
        except StoreNotCommittedError:
            previous = None
        current = model_hash(load_model(model_path))
        if previous is not None and previous != current:
            log.info("%s holds descriptors of another model (%s, now %s); extracting again", store, previous, current)
            shutil.rmtree(store)
    run_many([ExtractConfig(**config.extract.model_dump(), dataset=manifest, model=models[name], out=stores[name],
                            splits=[split]) for name in models])


def _locate_some(config: DemoConfig, model_path: str, store: str, split: str, data, out: str) -> list[dict]:
    """Index the trained model's test database and locate a few test photos (`sare index build` and `sare
    locate`); prints where each was placed against where it was taken. Returns one row per photo."""
    if not config.locate_photos or data is None:
        return []
    import numpy as np

    from ..index.build import IndexBuildConfig
    from ..index.build import run as build_index
    from ..locate.locate import LocateConfig
    from ..locate.locate import run as locate

    index = os.path.join(out, "index")
    build_index(IndexBuildConfig(store=store, out=index, split=split))
    rows = np.sort(np.random.default_rng(config.seed).choice(data.num_q, min(config.locate_photos, data.num_q),
                                                             replace=False))
    results = locate(LocateConfig(model=model_path, index=index, photos=[data.q_paths[i] for i in rows],
                                  truth=[tuple(map(float, data.q_utm[i])) for i in rows],
                                  out=os.path.join(out, "located")))
    print(f"where {len(results)} test photos were taken (sare locate, index of the trained model's test database):")
    print(f"{'photo':<28} {'placed at (E, N) m':>22} {'spread':>7} {'really at (E, N) m':>22} {'error':>8}")
    rows_out = []
    for r in results:
        p, t = r["position"], r["truth"]
        print(f"{os.path.basename(r['photo']):<28} {p['utm_east']:>11.1f}{p['utm_north']:>11.1f} {p['spread']:>7.1f} "
              f"{t['utm_east']:>11.1f}{t['utm_north']:>11.1f} {r['error']:>7.1f}m")
        rows_out.append({"photo": r["photo"], "position": p, "truth": t, "error_m": r["error"]})
    print(f"sheets: {os.path.join(out, 'located', 'locate.html')}")
    return rows_out


def drop_stale_training_run(train_config) -> bool:
    """Delete the demo's training run folder when it was trained with other settings (earlier demo settings),
    so that the demo trains again, as it makes its city again; `sare train` refuses such a rerun instead.
    Returns whether it deleted one."""
    from ..train import driver as train

    resolved = train.resolved(train_config)
    changed = train.settings_changed(resolved)
    if changed:
        directory = train.run_dir(resolved)
        log.info("the training run at %s was made with other settings (%s); training again", directory,
                 "; ".join(changed))
        shutil.rmtree(directory)
    return bool(changed)


def run(config: DemoConfig) -> dict:
    from sare_core.models.io import load_model, save_model
    from sare_core.training.fitting import fit_whitening

    from ..evaluate import stores as evaluate
    from ..train import driver as train

    started = time.perf_counter()
    stages: dict[str, float] = {}
    stage_ends: dict[str, float] = {}  # wall-clock (Unix seconds) at the end of each stage

    def stage_done(name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = now - since
        stage_ends[name] = time.time()
        return now

    out = os.path.abspath(config.out_dir)
    os.makedirs(out, exist_ok=True)
    manifest = _city(config)
    mark = stage_done("city", started)
    train_config = config.train
    drop_stale_training_run(train_config)
    trained = train.run(train_config)
    mark = stage_done("training (incl. k-means, validation, whitening)", mark)

    # The off-the-shelf model gets the same whitening treatment as the trained one.
    splits = train.load_splits(train_config)
    off_path = os.path.join(trained.run_dir, "off_the_shelf_model.pt")
    off_model = load_model(trained.initial_model_path)
    fit_whitening(off_model, splits[train_config.train_split].db_paths, train_config.model.whitening_dim,
                  train_config.whitening_images, train_config.seed, train_config.extract_batch_size)
    save_model(off_path, off_model, metadata={"stage": "off-the-shelf", "seed": config.seed})
    mark = stage_done("off-the-shelf model", mark)

    split = train_config.test_split or train_config.val_split
    models = {"off-the-shelf": off_path, "trained": trained.model_path}
    stores = {name: os.path.join(out, "stores", name.replace("-", "_")) for name in models}
    _extract(config, manifest, models, stores, split)
    mark = stage_done("test-area extraction (2 models)", mark)
    eval_config = evaluate.EvalConfig(
        models=[evaluate.ModelStores(name=n, database=s) for n, s in stores.items()],
        out_dir=os.path.join(out, "eval"), ns=config.eval_ns, split=split,
        images_root=os.path.dirname(manifest), seed=config.seed,
    )
    results = evaluate.run(eval_config)
    mark = stage_done("evaluation and report", mark)
    located = _locate_some(config, trained.model_path, stores["trained"], split, splits.get(split), out)
    if config.locate_photos:
        stage_done(f"index and locate {config.locate_photos} photos", mark)
    minutes = (time.perf_counter() - started) / 60
    summary = {
        "minutes": minutes,
        "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
        "stage_ended_at": stage_ends,
        "started_at": stage_ends[next(iter(stages))] - stages[next(iter(stages))],
        "recall@1": {n: r.recalls[1] for n, r in results.items()},
        "gain_recall@1": results["trained"].recalls[1] - results["off-the-shelf"].recalls[1],
        "best_epoch": trained.best_epoch,
        "epochs": [{k: h[k] for k in ("epoch", "val_recall@1", "tuples_per_s", "seconds", "mining_seconds",
                                             "trained_images", "mined_images", "trained_cached_images",
                                             "mined_cached_images", "loss", "grad_norm_median", "grad_norm_max",
                                             "clipped_steps") if k in h and h[k] == h[k]}  # NaN (epoch 0's loss) left out
                   for h in trained.history],
        "located": located,
        "outputs": {"eval": eval_config.out_dir, "training_curves": os.path.join(trained.run_dir, "training_curves.png"),
                    "model": trained.model_path},
    }
    with open(os.path.join(out, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"demo finished in {minutes:.1f} min: test Recall@1 off-the-shelf {100 * summary['recall@1']['off-the-shelf']:.1f}% "
          f"-> trained {100 * summary['recall@1']['trained']:.1f}% (+{100 * summary['gain_recall@1']:.1f} points)")
    print("time by stage: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items()))
    print(f"report: {eval_config.out_dir}/report.html, curves: {summary['outputs']['training_curves']}")
    return summary
