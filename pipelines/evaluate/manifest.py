"""`sare eval --manifest FILE --model SPEC [--model SPEC2 ...]`: extract and evaluate in one go, on any manifest.

    manifest (CSV/Parquet: path, role [, split], utm_east, utm_north | label)
      -> for each model: the model file ready to extract with
           saved model (sare_core.models.save_model, e.g. runs/X/model.pt): used as it is
           pretrained:BACKBONE-POOLING, or a model-config YAML: an off-the-shelf model, fitted here (below)
      -> Ray Data extraction (`pipelines.extract.pipeline.run_many`: one pass for models that preprocess
         alike) of the split's images into {out_dir}/stores/{name}-{hash}
      -> `pipelines.evaluate.stores.run`: exact search, Recall@N table (first model = baseline of the ratio row),
         eval.json, recall_at_n.png, report.html; plus manifest_eval.json (models, hashes, stores, timings)

Off-the-shelf models. `pretrained:NAME` names a backbone with its pretrained weights and a pooling:
`efficientnet_lite0-gem`, `efficientnet_lite0-netvlad` (ImageNet weights shipped in a package: no download),
`vgg16-netvlad`, `resnet50-gem`, ... (torchvision's weights: machines with internet only). The ModelConfig
starts from `model_config` (a ModelConfig YAML, or a run config with a `model:` section, e.g. a training
config, so that the off-the-shelf model matches the trained one: cut, image size, clusters, whitening) or
from ModelConfig's defaults without whitening; `pretrained` overrides fields. NetVLAD needs centroids: they
come from k-means on local descriptors of database images of `fit_split` (default: the evaluated split; no
labels are used). When the config asks for whitening (`whitening_dim`), PCA whitening is fitted on the
same split's database images. Both fits run in this process (a plain loop over at most
`centroid_images` / `whitening_images` images), drawn as `sare train` draws them; with a training config
as `model_config` (and its training split as `fit_split`), its centroid settings and seed apply, so the
off-the-shelf NetVLAD is that run's initial model (`initial_model.pt`, same model hash). The evaluated
images go through Ray Data.

Ground truth: database images within `radius` of each query (default: the manifest split's
pos_dist_thr, which Parquet manifests carry, else 25), in the manifest's units: metres, or frames when
utm_east is a frame index (`--radius 2`: within two frames); label manifests: same label.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

from pydantic import BaseModel, ConfigDict, Field

from sare_core.config_io import read_yaml_mapping
from sare_core.data.image_check import check_images
from sare_core.data.image_rows import dataset_root
from sare_core.data.manifest import read_manifest_splits
from sare_core.data.place_dataset import PlaceDataset
from sare_core.paths import absolute, is_remote

from .. import ray_session
from ..extract.config import ExtractSettings
from ..model.specs import (
    check_model_spec,
    default_row_name,
    is_model_config,
    is_pretrained,
    model_config_of,
    parse_model_arg,
)
from .stores import SEED_NS, EvalConfig, ModelStores, SearchSettings
from .stores import run as run_evaluation

log = logging.getLogger(__name__)

SPLIT_PREFERENCE = ("test", "val")  # a manifest with several splits and no --split: the first present


class ManifestEvalConfig(BaseModel):
    """What `sare eval --manifest` does; every field can be set from YAML or `--set key=value`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    manifest: str = Field(description="manifest (.csv/.parquet); relative image paths resolve under its folder")
    models: list[str] = Field(min_length=1, description="[NAME=]SPEC: a saved model file, a model-config YAML, "
                              "or pretrained:BACKBONE-POOLING; the first is the baseline of the ratio row")
    split: str | None = Field(None, description="split to evaluate (default: the manifest's only split, else "
                              "test, else val)")
    radius: float | None = Field(None, gt=0, description="positives within this distance, in the manifest's "
                                 "units (default: the split's pos_dist_thr, else 25)")
    fit_split: str | None = Field(None, description="off-the-shelf models: split whose database images fit the "
                                  "NetVLAD k-means and the PCA whitening (default: the evaluated split)")
    model_config_path: str | None = Field(None, alias="model_config", description="YAML (ModelConfig, or a run "
                                          "config's model: section) that pretrained:NAME models start from")
    pretrained: dict = Field(default_factory=dict, description="ModelConfig fields overriding pretrained:NAME's")
    centroid_images: int = Field(500, ge=1, description="database images sampled for NetVLAD k-means")
    centroid_descriptors_per_image: int = Field(100, ge=1)
    whitening_images: int | None = Field(None, ge=2, description="database images for PCA (None: all)")
    units: str = Field("m", description="what utm_east/utm_north count, for printed distances: m, or frames")
    out_dir: str = "runs/eval"
    ns: list[int] = Field(default_factory=lambda: list(SEED_NS))
    extract: ExtractSettings = Field(default_factory=ExtractSettings, description="how the extraction runs "
                                     "(batch_size, num_actors, ...)")
    evaluation: SearchSettings = Field(default_factory=SearchSettings, description="how stores are searched "
                                       "(search_mode, map_k, ...)")
    strip_whitening: bool = Field(False, description="evaluate every model without PCA whitening: saved models "
                                  "drop theirs, off-the-shelf models fit none")
    check_images: bool = Field(True, description="check that every image file exists before any work")
    seed: int = 0



FIT_FIELDS = ("centroid_images", "centroid_descriptors_per_image", "whitening_images", "seed")


def fit_settings(config: ManifestEvalConfig, source: str | None) -> dict:
    """centroid_images, centroid_descriptors_per_image, whitening_images and seed for off-the-shelf fits: the
    config's, except that a training config (`source`: the model-config YAML a model is built from) supplies
    those the config leaves unset, so that its off-the-shelf model is that run's initial model."""
    settings = {k: getattr(config, k) for k in FIT_FIELDS}
    if source:
        data = read_yaml_mapping(source)
        if isinstance(data.get("model"), dict):
            for key in FIT_FIELDS:
                if key in data and key not in config.model_fields_set:
                    settings[key] = data[key]
    return settings


def choose_split(splits: dict[str, PlaceDataset], wanted: str | None, manifest: str) -> str:
    if wanted is not None:
        if wanted not in splits:
            raise ValueError(f"{manifest}: no split {wanted!r} (field 'split' holds {sorted(splits)})")
        return wanted
    if len(splits) == 1:
        return next(iter(splits))
    for split in SPLIT_PREFERENCE:
        if split in splits:
            log.info("%s holds splits %s; evaluating %r (choose with --split)", manifest, sorted(splits), split)
            return split
    raise ValueError(f"{manifest}: holds splits {sorted(splits)}; choose one with --split")


class PreparedModel(BaseModel):
    """A model ready for extraction: its row name, the spec it came from, the file to extract with."""

    name: str
    spec: str
    path: str
    model_hash: str
    descriptor_dim: int
    off_the_shelf: bool
    fit: dict = Field(default_factory=dict)


def _safe(name: str) -> str:
    """A row name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _check_specs(config: ManifestEvalConfig, base_section: dict | None) -> list[tuple[str, str]]:
    """[(row name, spec)]; fails on a missing file, an unknown pretrained name or an invalid model config,
    before any work."""
    named = []
    for text in config.models:
        name, spec = parse_model_arg(text)
        check_model_spec(spec)
        if is_pretrained(spec) or is_model_config(spec):
            model_config_of(spec, base_section, config.pretrained)
        named.append((name or default_row_name(spec), spec))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"--model: row names repeat ({names}); name them, e.g. --model trained=runs/x/model.pt")
    return named


def prepare_model(name: str, spec: str, config: ManifestEvalConfig, fit_data: PlaceDataset,
                  base_section: dict | None, models_dir: str) -> PreparedModel:
    """Load a saved model, or build and fit an off-the-shelf one (`sare_core.training.fitting`, as `sare
    train` fits its initial model) and save it under `models_dir`."""
    from sare_core.models.io import load_model, model_hash, save_model
    from sare_core.training.fitting import fit_whitening, initial_model

    if not (is_pretrained(spec) or is_model_config(spec)):
        model = load_model(spec)
        path = absolute(spec)
        if config.strip_whitening and model.whitening is not None:
            model.set_whitening(None)
            path = os.path.join(models_dir, f"{_safe(name)}-{model_hash(model)}.pt")
            save_model(path, model, metadata={**model.metadata, "derived": f"{spec} without its whitening"})
        return PreparedModel(name=name, spec=spec, path=path, model_hash=model_hash(model),
                             descriptor_dim=model.descriptor_dim, off_the_shelf=False)
    model_cfg = model_config_of(spec, base_section, config.pretrained)
    if config.strip_whitening:
        model_cfg = model_cfg.model_copy(update={"whitening_dim": None})
    settings = fit_settings(config, config.model_config_path if is_pretrained(spec) else spec)
    model, fit = initial_model(model_cfg, fit_data.db_paths, settings["centroid_images"],
                               settings["centroid_descriptors_per_image"], settings["seed"])
    fit.update(fit_whitening(model, fit_data.db_paths, model_cfg.whitening_dim, settings["whitening_images"],
                             settings["seed"]))
    fit.update(fit_images=len(fit_data.db_paths), split=fit_data.split, seed=settings["seed"])
    digest = model_hash(model)
    path = os.path.join(models_dir, f"{_safe(name)}-{digest}.pt")
    save_model(path, model, metadata={"stage": "off-the-shelf", "spec": spec, "seed": settings["seed"], "fit": fit,
                                      "manifest": config.manifest})
    return PreparedModel(name=name, spec=spec, path=path, model_hash=digest, descriptor_dim=model.descriptor_dim,
                         off_the_shelf=True, fit=fit)


def run(config: ManifestEvalConfig) -> dict:
    """Prepare every model, extract the split's images with each (Ray Data), evaluate them together.

    Everything that can be checked is checked before any work: the manifest (file, fields, values), the
    split, the image files, the model specs. Returns {"results": {name: Evaluation}, "models": [...], ...}.
    """
    from ..extract.config import ExtractConfig
    from ..extract.pipeline import run_many

    started = time.perf_counter()
    manifest = absolute(config.manifest)
    splits = read_manifest_splits(manifest)
    split = choose_split(splits, config.split, config.manifest)
    data = splits[split]
    if data.num_db == 0 or data.num_q == 0:
        raise ValueError(f"{config.manifest}: split {split!r} has {data.num_db} database rows and {data.num_q} "
                         f"query rows (field 'role'); need both")
    fit_split = config.fit_split or split
    if fit_split not in splits:
        raise ValueError(f"fit_split: {config.manifest} has no split {fit_split!r} (it has {sorted(splits)})")
    base_section = (model_config_of(config.model_config_path).model_dump(exclude_unset=True)
                    if config.model_config_path else None)
    named = _check_specs(config, base_section)
    if config.check_images:
        paths = [p for p in (*data.db_paths, *data.q_paths) if not is_remote(p)]
        report = check_images(paths)
        if not report.ok:
            raise FileNotFoundError(f"{config.manifest}: field 'path': {report.summary()}")
    radius = config.radius if config.radius is not None else (data.pos_dist_thr if data.is_geographic else None)
    out = absolute(config.out_dir.rstrip("/"))
    if not is_remote(out):
        os.makedirs(out, exist_ok=True)

    prepared: list[PreparedModel] = []
    for name, spec in named:
        t0 = time.perf_counter()
        prepared.append(prepare_model(name, spec, config, splits[fit_split], base_section, f"{out}/models"))
        log.info("model %s: %s (%s, %d dims) ready in %.1f s", name, prepared[-1].path, prepared[-1].model_hash,
                 prepared[-1].descriptor_dim, time.perf_counter() - t0)

    import ray

    started_ray = ray_session.connect(config.extract.ray_address)
    extractions = {}
    try:
        stores = [f"{out}/stores/{_safe(model.name)}-{model.model_hash}" for model in prepared]
        # one pipeline for the models that preprocess alike: each image decoded once, shared frozen prefixes
        # run once (`pipelines.extract.pipeline.run_many`)
        results = run_many([ExtractConfig(**config.extract.model_dump(), dataset=manifest, model=model.path,
                                          out=store, splits=[split] if split else None, seed=config.seed)
                            for model, store in zip(prepared, stores)])
        for model, store, result in zip(prepared, stores, results):
            if result.failures:
                log.warning("%s: %d images could not be read (see the store's failures table); they are left "
                            "out of the evaluation", model.name, result.failures)
            extractions[model.name] = {"store": store, "seconds": result.seconds, "images": result.total,
                                       "failures": result.failures, "images_per_s": result.images_per_s}
    finally:
        if started_ray:
            ray.shutdown()

    eval_config = EvalConfig(**config.evaluation.model_dump(),
                             models=[ModelStores(name=m.name, database=extractions[m.name]["store"]) for m in prepared],
                             out_dir=out, ns=config.ns, radius=radius, split=split or None,
                             images_root=dataset_root(manifest), units=config.units)
    print(f"{config.manifest}, split {split or '(none)'}: {data.num_q} queries, {data.num_db} database images"
          + (f", positives within {radius:g} (manifest units)" if radius is not None else ", same-label positives"))
    results = run_evaluation(eval_config)
    record = {"manifest": config.manifest, "split": split, "radius": radius, "config": config.model_dump(mode="json",
              by_alias=True), "models": [m.model_dump() for m in prepared], "extractions": extractions,
              "results": {n: e.to_json() for n, e in results.items()}, "seconds": time.perf_counter() - started}
    if not is_remote(out):
        with open(f"{out}/manifest_eval.json", "w") as f:
            json.dump(record, f, indent=2, default=str)
    return {"results": results, "models": prepared, "split": split, "radius": radius, "record": record}
