"""`sare explain`: heat maps of where each image's descriptor draws its evidence, model beside model.

For every image and every model (the `--model`, then each `--compare`), computed by
`sare_core.evaluation.attribution`:

* contribution: each feature-map location's share of the pooled (NetVLAD / GeM) vector, |r_i| / sum |r_j|
* similarity (when the image has a match): each location's share of the cosine similarity with the
  match's descriptor, on the image and, the other way round, on the match; these sum (with the whitening's
  bias term) to the similarity the retrieval ranks by. Red pulls towards the match, blue away.

A match is given per image (`matches`), or found: the best database image of `database` (a manifest, of
`split`) by each model's own descriptors. Maps are computed on the feature grid (e.g. 4x8) and drawn
bilinearly upsampled over the image as the model sees it (resized to its input size).

Outputs in `out`: one PNG per image (rows: models; columns: image and match, contribution and similarity),
maps.npz (the raw maps), explain.json (models, images, matches, similarities).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sare_core.evaluation.attribution import contribution_maps, similarity_maps
from sare_core.models.embedding import EmbeddingModel, build_model
from sare_core.models.images import load_rgb
from sare_core.models.inference import embed_paths
from sare_core.models.io import load_model
from sare_core.models.netvlad import NetVLAD

from ..model.specs import PRETRAINED_PREFIX, default_row_name, parse_model_arg, pretrained_model_config

log = logging.getLogger(__name__)


class ExplainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, description="[NAME=]CKPT (saved models; pretrained:BACKBONE-gem "
                              "also works); the first is --model, the others --compare")
    images: list[str] = Field(min_length=1)
    out: str
    matches: list[str] | None = Field(None, description="one match image per image (e.g. the same place)")
    database: str | None = Field(None, description="manifest whose database images are searched for each "
                                 "image's best match (per model)")
    split: str | None = None
    image_size: tuple[int, int] | None = Field(None, description="pretrained:NAME models only: (height, width)")
    batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ExplainConfig:
        if self.matches is not None and len(self.matches) != len(self.images):
            raise ValueError(f"matches: {len(self.matches)} given for {len(self.images)} images (one each)")
        if self.matches is not None and self.database is not None:
            raise ValueError("give matches or database, not both")
        return self


def load_explain_model(spec: str, image_size: tuple[int, int] | None = None) -> EmbeddingModel:
    """A saved model, or pretrained:BACKBONE-gem (NetVLAD needs fitted centroids: use a saved model such as
    a training run's initial_model.pt, or the models/ that `sare eval --manifest` writes)."""
    if spec.startswith(PRETRAINED_PREFIX):
        cfg = pretrained_model_config(spec, overrides={"image_size": image_size} if image_size else None)
        if cfg.pooling == "netvlad":
            raise ValueError(f"--model {spec}: an off-the-shelf NetVLAD needs k-means centroids; give a saved model "
                             f"(a training run's initial_model.pt, or one under `sare eval --manifest`'s models/)")
        torch.manual_seed(0)
        return build_model(cfg).eval()
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"--model: no such file: {spec}")
    return load_model(spec).eval()


def _pixels(model: EmbeddingModel, path: str) -> tuple[np.ndarray, torch.Tensor]:
    """(H, W, 3) uint8 as the model sees the image, and its (1, 3, H, W) normalised tensor."""
    prep = model.preprocessor
    pixels = prep.to_uint8(load_rgb(path))
    return pixels, prep.normalize_uint8(pixels[None])


def _upsample(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    t = torch.as_tensor(grid, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def _best_matches(model: EmbeddingModel, images: list[str], db_paths: list[str], batch_size: int) -> list[int]:
    q = embed_paths(model, images, batch_size=batch_size)
    db = embed_paths(model, db_paths, batch_size=batch_size)
    return np.argmax(q @ db.T, axis=1).tolist()


def explain_pair(model: EmbeddingModel, image: str, match: str | None) -> dict:
    """Maps of one image (and its match) under one model: contribution grids, similarity grids, similarity."""
    pix, x = _pixels(model, image)
    out = {"pixels": pix, "contribution": contribution_maps(model, x)[0].numpy()}
    if match is not None:
        mpix, mx = _pixels(model, match)
        with torch.no_grad():
            q, m = model(x), model(mx)
        sim_q, bias_q = similarity_maps(model, x, m)
        sim_m, bias_m = similarity_maps(model, mx, q)
        out.update(match_path=match, match_pixels=mpix, match_contribution=contribution_maps(model, mx)[0].numpy(),
                   similarity=sim_q[0].numpy(), match_similarity=sim_m[0].numpy(),
                   cosine=float((q * m).sum()), bias=float(bias_q[0]), match_bias=float(bias_m[0]))
    return out


def _label(path: str) -> str:
    """'winter/images-08000.png': the folder tells aligned traverses apart."""
    return "/".join(os.path.normpath(path).split(os.sep)[-2:])


def plot_explanation(rows: list[tuple[str, dict]], image: str, path: str) -> None:
    """One figure: a row per model; columns image/match x contribution/similarity (each row its own match)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4 if any("match_path" in maps for _, maps in rows) else 1
    h, w = rows[0][1]["pixels"].shape[:2]
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 3.4, len(rows) * (3.2 * h / w + 0.7) + 0.4),
                             dpi=80, squeeze=False)
    for r, (name, maps) in enumerate(rows):
        panels = [("contribution", maps["pixels"], maps["contribution"], "inferno", _label(image))]
        if "match_path" in maps:
            limit = max(np.abs(maps["similarity"]).max(), np.abs(maps["match_similarity"]).max(), 1e-9)
            panels += [("contribution", maps["match_pixels"], maps["match_contribution"], "inferno",
                        _label(maps["match_path"])),
                       ("similarity to the match", maps["pixels"], maps["similarity"], ("coolwarm", limit),
                        _label(image)),
                       ("similarity to the image", maps["match_pixels"], maps["match_similarity"],
                        ("coolwarm", limit), _label(maps["match_path"]))]
        for c, (kind, pixels, grid, cmap, label) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(pixels)
            heat = _upsample(grid, pixels.shape[:2])
            if isinstance(cmap, tuple):
                ax.imshow(heat, cmap=cmap[0], vmin=-cmap[1], vmax=cmap[1], alpha=0.55)
            else:
                ax.imshow(heat, cmap=cmap, alpha=0.55)
            title = f"{name}\n{kind}: {label}"
            if c == 2:
                title += f" (cos {maps['cosine']:.3f})"
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run(config: ExplainConfig) -> dict:
    """Compute and draw every image's maps under every model; returns the explain.json record."""
    for field, paths in (("images", config.images), ("matches", config.matches or [])):
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{field}: no such image: {p}")
    named = []
    for text in config.models:
        name, spec = parse_model_arg(text)
        named.append((name or default_row_name(spec), spec))
    if len({n for n, _ in named}) != len(named):
        raise ValueError(f"model names repeat: {[n for n, _ in named]}; name them NAME=CKPT")
    db_paths: list[str] = []
    if config.database:
        from sare_core.data.manifest import read_manifest_splits

        from ..evaluate.manifest import choose_split

        splits = read_manifest_splits(config.database)
        db_paths = splits[choose_split(splits, config.split, config.database)].db_paths
    models = [(name, load_explain_model(spec, config.image_size)) for name, spec in named]
    for name, model in models:
        log.info("%s: %s pooling, input size %s", name, "NetVLAD" if isinstance(model.pool, NetVLAD) else "GeM",
                 model.config.image_size or "native size")
    matches: dict[str, list[str | None]] = {}
    for name, model in models:
        if config.matches is not None:
            matches[name] = list(config.matches)
        elif db_paths:
            matches[name] = [db_paths[i] for i in _best_matches(model, config.images, db_paths, config.batch_size)]
        else:
            matches[name] = [None] * len(config.images)
    os.makedirs(config.out, exist_ok=True)
    record: dict = {"models": [{"name": n, "spec": s} for n, s in named], "images": []}
    arrays = {}
    for i, image in enumerate(config.images):
        rows = []
        entry: dict = {"image": image, "per_model": {}}
        for name, model in models:
            match = matches[name][i]
            maps = explain_pair(model, image, match)
            rows.append((name, maps))
            entry["per_model"][name] = {"match": match, "cosine": maps.get("cosine"), "bias": maps.get("bias")}
            for key in ("contribution", "similarity", "match_contribution", "match_similarity"):
                if key in maps:
                    arrays[f"{i:03d}/{name}/{key}"] = maps[key]
        stem = os.path.splitext(os.path.basename(image))[0]
        png = os.path.join(config.out, f"{i:03d}_{stem}.png")
        plot_explanation(rows, image, png)
        entry["png"] = png
        record["images"].append(entry)
        log.info("wrote %s", png)
    np.savez_compressed(os.path.join(config.out, "maps.npz"), **{k.replace("/", "__"): v for k, v in arrays.items()})
    with open(os.path.join(config.out, "explain.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record
