"""The synthetic city: an embedded, reproducible street-view dataset for demos, tests and scale benchmarks.

`generate_city(out_dir, preset, seed, workers)` renders three geographically disjoint areas (train, val,
test; 6 km apart in UTM) of a procedural city and writes, under `out_dir`:

    images/{split}/database/{shard:03d}/{index:07d}.jpg   database images (<= 1000 per shard folder)
    images/{split}/queries/{shard:03d}/{index:07d}.jpg    query images
    {split}.mat          NetVLAD dbStruct; image names relative to out_dir, UTM metres, 25 m / 100 m^2:
                         load_dbstruct(out_dir/'test.mat', db_root=out_dir, q_root=out_dir)
    manifest.parquet     every split, paths relative to out_dir (sare_core.data.manifest)
    city.json            preset, seed, counts, queries per time of day, generator version, git revision,
                         the split areas' UTM origins and the preset's parameters

What makes it a localisation problem rather than a toy: facades are continuous strips along the streets,
so views a few metres apart overlap and views down a street look alike for tens of metres; one palette of
facade styles (materials, window grids, colours) repeats across the whole city, so buildings on different
streets look alike (perceptual aliasing) and places differ by the sequence of buildings and their own
details (tints, heights, signs, shop fronts, awnings, murals, street trees). Queries are taken at another
time (overcast, dusk, night with lit windows; autumn and winter trees), by another camera (zoom, tilt,
roll, colour cast, noise, blur, JPEG) from other viewpoints (across the road, on the sidewalk, other
headings), with other passers-by in front. `benchmarks/synth_difficulty.py` measures how hard that is for
an off-the-shelf CNN; `query_times` gives each query's time of day for per-condition results.

Images are rendered in fixed chunks of `preset.chunk_images` by worker processes that each stream their
chunk to disk, so memory stays bounded; every random value is keyed by (seed, split, role, image), so the
bytes (images and .mat files) do not depend on the number of workers.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from ...allocator import keep_freed_memory
from ..dbstruct import save_dbstruct
from ..place_dataset import PlaceDataset
from .effects import develop, draw_occluders
from .layout import SPLIT_ORIGINS_UTM, build_layout
from .presets import PRESETS, SPLITS, CityPreset, get_preset
from .render import render
from .views import (
    DAY,
    DUSK,
    NIGHT,
    OVERCAST,
    database_positions,
    database_views,
    query_positions,
    query_views,
)

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2"
ROLES = ("database", "queries")
# Pixels rendered at once inside a chunk: it bounds a worker's memory. 120k (six 160x120 images) rendered
# the small city with two processes 1.5% faster than 400k (median of 3 rounds, every round faster) and the
# same bytes (results/city_batch.json, benchmarks/city_batch.py).
RENDER_BATCH_PIXELS = 120_000
TIME_NAMES = {DAY: "day", OVERCAST: "overcast", DUSK: "dusk", NIGHT: "night"}

__all__ = ["GENERATOR_VERSION", "PRESETS", "city_is_current", "generate_city", "image_relpath", "query_times", "render_images"]


def image_relpath(preset: CityPreset, split: str, role: str, index: int) -> str:
    """Path of an image relative to the city's out_dir, e.g. 'images/test/queries/000/0000042.jpg'."""
    return f"images/{split}/{role}/{index // preset.shard_size:03d}/{index:07d}.jpg"


@functools.lru_cache(maxsize=6)
def _layout(preset_name: str, seed: int, split: str):
    return build_layout(get_preset(preset_name), seed, split)


def render_images(preset_name: str, seed: int, split: str, role: str, indices: np.ndarray):
    """Render images `indices` of (split, role): ((n, H, W, 3) uint8 before blur and JPEG, their Views).

    An image's pixels do not depend on which other images share the call (all arithmetic is element-wise
    and every random value is keyed by the image), so any subset can be re-rendered for inspection.
    """
    preset = get_preset(preset_name)
    layout = _layout(preset_name, seed, split)
    indices = np.asarray(indices, dtype=np.int64)
    views = (database_views(layout, preset, seed, indices) if role == "database"
             else query_views(layout, seed, indices))
    width, height = preset.image_size
    linear = render(layout, views, width, height)
    draw_occluders(linear, views)
    return develop(linear, views), views


def _render_chunk(out_dir: str, preset_name: str, seed: int, split: str, role: str, start: int, stop: int,
                  batch_pixels: int = RENDER_BATCH_PIXELS) -> int:
    """Render images [start, stop) of (split, role), `batch_pixels` pixels per render call, and write them
    as JPEG; returns how many."""
    preset = get_preset(preset_name)
    width, height = preset.image_size
    batch = max(1, batch_pixels // (width * height))
    for lo in range(start, stop, batch):
        images, views = render_images(preset_name, seed, split, role, np.arange(lo, min(lo + batch, stop)))
        for i, index in enumerate(range(lo, min(lo + batch, stop))):
            image = Image.fromarray(images[i])
            if views.blur_px[i] > 0:
                image = image.filter(ImageFilter.GaussianBlur(float(views.blur_px[i])))
            path = os.path.join(out_dir, image_relpath(preset, split, role, index))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            image.save(path, format="JPEG", quality=int(views.jpeg_quality[i]))
    return stop - start


def _chunks(preset: CityPreset) -> list[tuple[str, str, int, int]]:
    """Every (split, role, start, stop) work unit, fixed by the preset alone."""
    units = []
    for split in SPLITS:
        for role, count in zip(ROLES, preset.counts[split]):
            for start in range(0, count, preset.chunk_images):
                units.append((split, role, start, min(start + preset.chunk_images, count)))
    return units


def _run_chunks(out_dir: str, preset: CityPreset, seed: int, workers: int, batch_pixels: int) -> None:
    """Render every chunk, in worker processes when workers > 1, logging progress and throughput."""
    units = _chunks(preset)
    total = sum(stop - start for _, _, start, stop in units)
    started = time.perf_counter()
    with tqdm(total=total, desc=f"synthetic city {preset.name}", unit="img", mininterval=2.0) as bar:
        if workers == 1:
            for split, role, start, stop in units:
                bar.update(_render_chunk(out_dir, preset.name, seed, split, role, start, stop, batch_pixels))
        else:
            # spawn: the caller may hold threads (torch, Ray) that fork would copy in a broken state
            context = multiprocessing.get_context("spawn")
            # initializer: the render's numpy temporaries (a few MiB each) reused instead of faulted in again
            # (sare_core.allocator); with workers == 1 the caller's process keeps its own allocator settings
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=keep_freed_memory) as pool:
                futures = [pool.submit(_render_chunk, out_dir, preset.name, seed, *unit, batch_pixels)
                           for unit in units]
                for future in futures:
                    bar.update(future.result())
    seconds = time.perf_counter() - started
    log.info("rendered %d images in %.1f s (%.0f images/s, %d workers)", total, seconds, total / seconds, workers)


def _split_dataset(out_dir: str, preset: CityPreset, seed: int, split: str, absolute: bool) -> PlaceDataset:
    """The PlaceDataset of one split; image paths relative to out_dir unless `absolute`."""
    layout = _layout(preset.name, seed, split)
    num_db, num_q = preset.counts[split]
    db_street, db_x, db_y = database_positions(layout, preset, seed, np.arange(num_db))
    q_street, q_x, q_y = query_positions(layout, seed, np.arange(num_q))
    root = os.path.abspath(out_dir) if absolute else ""
    return PlaceDataset(
        name=f"synth_{preset.name}_{split}",
        db_paths=[os.path.join(root, image_relpath(preset, split, "database", i)) for i in range(num_db)],
        q_paths=[os.path.join(root, image_relpath(preset, split, "queries", i)) for i in range(num_q)],
        db_utm=layout.to_utm(db_street, db_x, db_y),
        q_utm=layout.to_utm(q_street, q_x, q_y),
        pos_dist_thr=25.0,
        nontriv_pos_dist_sq_thr=100.0,
        split=split,
    )


def query_times(preset: str, seed: int, split: str) -> list[str]:
    """Time of day ('day' | 'overcast' | 'dusk' | 'night') of every query of a split, in dbStruct order."""
    config = get_preset(preset)
    layout = _layout(config.name, int(seed), split)
    times = query_views(layout, int(seed), np.arange(config.counts[split][1])).time
    return [TIME_NAMES[int(t)] for t in times]


def _query_time_counts(preset: CityPreset, seed: int, split: str) -> dict[str, int]:
    times = query_times(preset.name, seed, split)
    return {name: times.count(name) for name in TIME_NAMES.values()}


def _stable_mat_header(path: str) -> None:
    """scipy stamps the creation time into the 116-byte MAT-file header text; replace it with a fixed text
    so that regenerating a city gives byte-identical .mat files."""
    text = f"MATLAB 5.0 MAT-file, written by sare_core.data.synth version {GENERATOR_VERSION}".encode("ascii")
    with open(path, "r+b") as f:
        if not f.read(116).startswith(b"MATLAB 5.0 MAT-file"):
            raise RuntimeError(f"{path}: unexpected MAT-file header")
        f.seek(0)
        f.write(text.ljust(116, b" "))


def city_is_current(out_dir: str, preset: str, seed: int) -> bool:
    """True when out_dir holds a finished city that this code would generate for (preset, seed): its city.json
    names the same preset, seed, generator version and preset parameters (counts, image size, views...)."""
    record = os.path.join(os.fspath(out_dir), "city.json")
    if not os.path.isfile(record):
        return False
    with open(record) as f:
        info = json.load(f)
    wanted = {"preset": preset, "seed": int(seed), "generator_version": GENERATOR_VERSION,
              "parameters": json.loads(json.dumps(get_preset(preset).to_dict()))}
    return all(info.get(key) == value for key, value in wanted.items())


def generate_city(out_dir: str, preset: str = "small", seed: int = 0, workers: int | None = None,
                  batch_pixels: int = RENDER_BATCH_PIXELS) -> dict:
    """Render the synthetic city `preset` (tiny | small | pitts30k | pitts250k) with `seed` under out_dir.

    workers: processes rendering in parallel (default os.cpu_count(); 1 renders in this process).
    batch_pixels: pixels per render call (memory and speed only).
    The same (preset, seed) gives byte-identical images and .mat files whatever the worker count and batch.

    Returns {"out_dir", "preset", "seed", "mat": {split: path}, "manifest": path, "city_json": path,
    "counts": {split: {"database": n, "queries": m}}, "seconds": wall time}.
    """
    config = get_preset(preset)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if batch_pixels < 1:
        raise ValueError(f"batch_pixels must be >= 1, got {batch_pixels}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    log.info("synthetic city %r (seed %d) -> %s with %d workers", preset, seed, out_dir, workers)
    _run_chunks(out_dir, config, int(seed), workers, int(batch_pixels))

    # Imported here: these pull in pyarrow, which the image workers never need.
    from ...store.metadata import detect_git_revision
    from ..manifest import write_manifest

    mats, absolute = {}, []
    for split in SPLITS:
        mats[split] = os.path.join(out_dir, f"{split}.mat")
        save_dbstruct(mats[split], _split_dataset(out_dir, config, int(seed), split, absolute=False), split)
        _stable_mat_header(mats[split])
        absolute.append(_split_dataset(out_dir, config, int(seed), split, absolute=True))
    manifest = write_manifest(os.path.join(out_dir, "manifest.parquet"), absolute)
    counts = {split: {"database": config.counts[split][0], "queries": config.counts[split][1]} for split in SPLITS}
    city_json = os.path.join(out_dir, "city.json")
    record = {
        "generator": "sare_core.data.synth",
        "generator_version": GENERATOR_VERSION,
        "git_revision": detect_git_revision(),
        "preset": preset,
        "seed": int(seed),
        "counts": counts,
        "query_times": {split: _query_time_counts(config, int(seed), split) for split in SPLITS},
        "split_origins_utm": {split: list(SPLIT_ORIGINS_UTM[split]) for split in SPLITS},
        "roots": "image paths in {split}.mat and manifest.parquet are relative to this folder",
        "parameters": config.to_dict(),
    }
    with open(city_json, "w") as f:
        json.dump(record, f, indent=2)
    seconds = time.perf_counter() - started
    return {
        "out_dir": out_dir,
        "preset": preset,
        "seed": int(seed),
        "mat": mats,
        "manifest": manifest,
        "city_json": city_json,
        "counts": counts,
        "seconds": seconds,
    }
