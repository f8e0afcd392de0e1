"""`sare locate`: where was this photo taken? Each photo goes through the model, its descriptor is searched
in the index, and the matches give a position estimate (`sare_core.index.position`).

    run(LocateConfig(model="runs/demo/runs/demo/model.pt", index="runs/demo/index", photos=["q.jpg"]))

Output in `out`: locate.json (per photo: the top-k matches with id, path, coordinates and distance, the
position estimate with its spread and support), and per photo a PNG sheet (the photo, its matches, and a
map of them with the estimate) and one HTML page of them all. A model whose hash is not the index's is
refused before any photo is read.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sare_core.index.faiss_index import SearchParams

log = logging.getLogger(__name__)


class LocateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a saved model (the one whose descriptors the index holds)")
    index: str = Field(description="an index folder (`sare index build`)")
    photos: list[str] = Field(min_length=1)
    k: int = Field(10, ge=1, description="matches per photo")
    radius: float = Field(25.0, gt=0, description="matches within this distance of each other agree on a place")
    out: str | None = Field(None, description="folder for locate.json and the sheets (default: none written)")
    search: SearchParams = Field(default_factory=SearchParams, description="search-time index settings "
                                 "(nprobe, ef_search, rerank; default: the index's own)")
    truth: list[tuple[float, float]] | None = Field(None, description="the photos' true positions, when known "
                                                   "(drawn on the sheets and reported as errors)")

    @field_validator("photos")
    @classmethod
    def _photos_exist(cls, photos: list[str]) -> list[str]:
        missing = [p for p in photos if "://" not in p and not os.path.isfile(p)]
        if missing:
            raise ValueError(f"no such photo file(s): {missing[:5]}")
        return photos


class Localizer:
    """A model and an index that belong together, ready to locate photos (what `sare serve` replicas hold)."""

    def __init__(self, model_path: str, index_path: str, device: str = "cpu", search: dict | None = None):
        from sare_core.index.store_index import LocalizationIndex
        from sare_core.models.io import load_model, model_hash

        self.model = load_model(model_path).eval().to(device)
        self.model_hash = model_hash(self.model)
        self.index = LocalizationIndex.load(index_path, expected_model_hash=self.model_hash)
        if search:  # nprobe / ef_search / rerank (SearchParams) over the index's recorded ones
            self.index.set_search_params(**search)
        self.device = device

    def describe(self, images) -> np.ndarray:
        """(N, D) descriptors of PIL images (any size: the model's preprocessing resizes them)."""
        import torch

        prep = self.model.preprocessor
        pixels = [prep.to_uint8(img) for img in images]
        out = []
        with torch.inference_mode():
            for pix in pixels:  # one at a time: photos may differ in size when the model keeps sizes
                out.append(self.model(prep.normalize_uint8(pix[None]).to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.descriptor_dim), np.float32)

    def locate(self, images, k: int = 10, radius: float = 25.0) -> list[dict]:
        """Per image: {"matches": [...], "position": {...} or None, "model_hash", "index"}."""
        from sare_core.index.position import estimate_position

        started = time.perf_counter()
        results = []
        for matches in self.index.search(self.describe(images), k):
            position = None
            if self.index.geographic and matches:
                estimate = estimate_position(np.array([m.utm for m in matches]),
                                             np.array([m.distance for m in matches]), radius)
                position = estimate.to_json() if estimate else None
            results.append({"matches": [m.to_json() for m in matches], "position": position,
                            "model_hash": self.model_hash, "index": self.index.uri})
        seconds = (time.perf_counter() - started) / max(1, len(results))
        for r in results:
            r["seconds"] = seconds
        return results


def run(config: LocateConfig) -> list[dict]:
    """Locate every photo; returns the per-photo results (also written to `out`)."""
    from sare_core.evaluation.report import write_json
    from sare_core.models.images import load_rgb

    from .sheet import write_html_sheet, write_png_sheet

    if config.truth is not None and len(config.truth) != len(config.photos):
        raise ValueError(f"truth: {len(config.truth)} positions for {len(config.photos)} photos")
    localizer = Localizer(config.model, config.index, search=config.search.model_dump(exclude_none=True))
    results = localizer.locate([load_rgb(p) for p in config.photos], config.k, config.radius)
    for i, (photo, result) in enumerate(zip(config.photos, results)):
        result["photo"] = photo
        if config.truth is not None:
            result["truth"] = {"utm_east": config.truth[i][0], "utm_north": config.truth[i][1]}
            if result["position"]:
                p = result["position"]
                result["error"] = float(np.hypot(p["utm_east"] - config.truth[i][0],
                                                 p["utm_north"] - config.truth[i][1]))
    if config.out:
        os.makedirs(config.out, exist_ok=True)
        for i, result in enumerate(results):
            result["sheet"] = write_png_sheet(result, os.path.join(config.out, f"{i:03d}_{_stem(result['photo'])}.png"))
        write_html_sheet(results, os.path.join(config.out, "locate.html"))
        write_json(os.path.join(config.out, "locate.json"), {"model": config.model, "index": config.index,
                                                             "results": results})
    return results


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0][:40]
