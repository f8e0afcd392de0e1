"""Dataset stage: convert any supported dataset to a manifest, inspect a dataset, generate the synthetic city.

Each job has a typed config that validates itself on construction (a bad field fails before any work,
naming the field); `run(config)` dispatches on the config type. No Ray here: these are single-process jobs
that prepare the inputs of the Ray stages.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field

from sare_core.data.aligned import load_aligned_traverses
from sare_core.data.dbstruct import load_dbstruct
from sare_core.data.gldv2 import load_gldv2_retrieval, load_gldv2_train
from sare_core.data.gsv import gsv_splits, load_gsv_folders
from sare_core.data.image_check import check_images
from sare_core.data.manifest import manifest_format, read_manifest_splits, write_manifest
from sare_core.data.names import DATASET_FORMATS as FORMATS
from sare_core.data.names import SPLITS
from sare_core.data.place_dataset import PlaceDataset
from sare_core.data.sources import open_splits
from sare_core.data.summary import SplitSummary, format_summary, plot_map, summarize
from sare_core.data.synth.presets import PRESETS as _PRESETS

log = logging.getLogger(__name__)



def _check_split(value: str | None, what: str) -> None:
    if value is not None and value not in (*SPLITS, ""):
        raise ValueError(f"{what}: split must be one of {SPLITS}, got {value!r}")


def _check_thresholds(cfg) -> None:
    for name in ("pos_dist_thr", "nontriv_pos_dist_sq_thr"):
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


@dataclass
class ConvertConfig:
    """`sare data convert`: read `inputs` in `format`, write one manifest at `out` (.csv or .parquet).

    format-specific fields: dbstruct (inputs: .mat files, one per split; images_root), gsv (inputs: one
    dataset folder; splits), aligned (inputs: the database folder; queries; tolerance_frames,
    train_tolerance_frames, index_by), gldv2 (inputs: the folder with the CSVs; gldv2_set, usage,
    keep_distractors, images_root for train), manifest (inputs: one manifest, e.g. CSV -> Parquet).
    split renames the split of a single dataset; pos_dist_thr (m) / nontriv_pos_dist_sq_thr (m^2) override
    the reader's thresholds; check_images lists missing/unreadable images and fails before writing.
    """

    format: str
    inputs: list[str]
    out: str
    split: str | None = None
    splits: list[str] | None = None
    queries: list[str] = field(default_factory=list)
    tolerance_frames: float = 2
    train_tolerance_frames: float | None = None
    index_by: str = "position"
    gldv2_set: str = "retrieval"
    usage: list[str] | None = None
    keep_distractors: bool = True
    images_root: str | None = None
    pos_dist_thr: float | None = None
    nontriv_pos_dist_sq_thr: float | None = None
    check_images: bool = False
    decode_images: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if not self.inputs:
            raise ValueError("inputs: give at least one input path")
        manifest_format(self.out)
        _check_split(self.split, "split")
        for s in self.splits or []:
            _check_split(s, "splits")
        _check_thresholds(self)
        if self.format == "aligned" and not self.queries:
            raise ValueError("queries: aligned traverses need at least one query folder")
        if self.format != "dbstruct" and len(self.inputs) > 1:
            raise ValueError(f"inputs: format {self.format} takes one input, got {len(self.inputs)}")
        if self.gldv2_set not in ("retrieval", "train"):
            raise ValueError(f"gldv2_set must be retrieval or train, got {self.gldv2_set!r}")
        if self.index_by not in ("position", "frame_number"):
            raise ValueError(f"index_by must be position or frame_number, got {self.index_by!r}")


def read_inputs(cfg: ConvertConfig) -> list[PlaceDataset]:
    """The datasets `cfg` describes, thresholds and split overrides applied."""
    if cfg.format == "dbstruct":
        datasets = [load_dbstruct(p, images_root=cfg.images_root) for p in cfg.inputs]
    elif cfg.format == "gsv":
        available = gsv_splits(cfg.inputs[0])
        if not available:
            raise FileNotFoundError(f"{cfg.inputs[0]}: no GSV split folders (images/{{train,val,test}}/database)")
        wanted = cfg.splits or available
        missing = [s for s in wanted if s not in available]
        if missing:
            raise ValueError(f"splits: {missing} not found under {cfg.inputs[0]} (found {available})")
        datasets = [load_gsv_folders(cfg.inputs[0], s or None) for s in wanted]
    elif cfg.format == "aligned":
        datasets = [load_aligned_traverses(cfg.inputs[0], cfg.queries, tolerance_frames=cfg.tolerance_frames,
                                           train_tolerance_frames=cfg.train_tolerance_frames,
                                           index_by=cfg.index_by)]
    elif cfg.format == "gldv2":
        if cfg.gldv2_set == "train":
            csv = cfg.inputs[0] if cfg.inputs[0].endswith(".csv") else os.path.join(cfg.inputs[0], "train.csv")
            datasets = [load_gldv2_train(csv, images_root=cfg.images_root)]
        else:
            datasets = [load_gldv2_retrieval(cfg.inputs[0], usage=tuple(cfg.usage) if cfg.usage else None,
                                             keep_distractors=cfg.keep_distractors)]
    else:
        datasets = list(read_manifest_splits(cfg.inputs[0], cfg.pos_dist_thr, cfg.nontriv_pos_dist_sq_thr).values())
    if cfg.split is not None:
        if len(datasets) != 1:
            raise ValueError(f"split: renaming needs exactly one dataset, the inputs hold {len(datasets)}")
        datasets = [dataclasses.replace(datasets[0], split=cfg.split)]
    overrides = {k: getattr(cfg, k) for k in ("pos_dist_thr", "nontriv_pos_dist_sq_thr") if getattr(cfg, k)}
    return [dataclasses.replace(d, **overrides) for d in datasets] if overrides else datasets


def require_images(datasets: list[PlaceDataset], decode: bool = False, source: str = "") -> None:
    """Raise ValueError naming `source` and its field 'path' (count and first paths) when any image of
    `datasets` is missing or unreadable."""
    paths = [p for d in datasets for p in (*d.db_paths, *d.q_paths)]
    report = check_images(paths, decode=decode)
    log.info("checked %d images: %s", report.checked, report.summary())
    if not report.ok:
        raise ValueError(f"{source}: field 'path': {report.summary()}" if source else report.summary())


def convert(cfg: ConvertConfig) -> list[PlaceDataset]:
    """Read the inputs, optionally check their images, write the manifest; returns the datasets written."""
    datasets = read_inputs(cfg)
    if cfg.check_images:
        require_images(datasets, cfg.decode_images, source=", ".join(cfg.inputs))
    write_manifest(cfg.out, datasets)
    return datasets


@dataclass
class InspectConfig:
    """`sare data inspect`: summarise `path` (manifest, dbStruct .mat or a recognised folder), write a map.

    map_png: where the map goes (default: `<stem>_map.png` next to an input file when that folder is
    writable, else in the current directory). json_out: also write the summaries as JSON.
    """

    path: str
    map_png: str | None = None
    split: str | None = None
    json_out: str | None = None
    tolerance_frames: float = 2
    pos_dist_thr: float | None = None
    nontriv_pos_dist_sq_thr: float | None = None
    check_images: bool = False

    def __post_init__(self) -> None:
        _check_split(self.split, "split")
        _check_thresholds(self)
        if self.map_png is not None and not self.map_png.lower().endswith(".png"):
            raise ValueError(f"map: the map is a PNG, got {self.map_png!r}")

    def default_map_path(self) -> str:
        path = os.path.abspath(self.path)
        stem = os.path.basename(os.path.normpath(path)).split(".")[0] or "dataset"
        folder = os.path.dirname(path)
        if os.path.isfile(path) and os.access(folder, os.W_OK):
            return os.path.join(folder, f"{stem}_map.png")
        return os.path.join(os.getcwd(), f"{stem}_map.png")


@dataclass
class InspectResult:
    summaries: list[SplitSummary]
    map_png: str
    text: str
    image_report: str | None = None


def inspect_dataset(cfg: InspectConfig) -> InspectResult:
    """Summaries of every split (or `cfg.split`), the text report and the map written."""
    splits = open_splits(cfg.path, tolerance_frames=cfg.tolerance_frames)
    if cfg.split is not None:
        if cfg.split not in splits:
            raise ValueError(f"{cfg.path}: no split {cfg.split!r} (found {list(splits)})")
        splits = {cfg.split: splits[cfg.split]}
    overrides = {k: getattr(cfg, k) for k in ("pos_dist_thr", "nontriv_pos_dist_sq_thr") if getattr(cfg, k)}
    if overrides:
        splits = {s: dataclasses.replace(d, **overrides) for s, d in splits.items()}
    image_report = None
    if cfg.check_images:
        report = check_images([p for d in splits.values() for p in (*d.db_paths, *d.q_paths)])
        image_report = report.summary()
    summaries = [summarize(d) for d in splits.values()]
    text = format_summary(summaries)
    if image_report:
        text += f"\n\nimages: {image_report}"
    map_png = plot_map(splits, cfg.map_png or cfg.default_map_path())
    if cfg.json_out:
        with open(cfg.json_out, "w") as fh:
            json.dump({"path": cfg.path, "map": map_png, "splits": [s.to_dict() for s in summaries]}, fh, indent=2)
    return InspectResult(summaries=summaries, map_png=map_png, text=text, image_report=image_report)


@dataclass
class SynthConfig:
    """`sare data synth`: render the synthetic city `preset` with `seed` into `out` using `workers` processes
    (None: one per CPU)."""

    out: str
    preset: str = "small"
    seed: int = 0
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.preset not in _PRESETS:
            raise ValueError(f"preset must be one of {tuple(_PRESETS)}, got {self.preset!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


def synth(cfg: SynthConfig) -> dict:
    """Generate the synthetic city; returns `generate_city`'s record (paths of the .mat files and manifest,
    counts per split, seconds)."""
    from sare_core.data.synth.city import generate_city  # heavy renderer: imported only when asked for

    return generate_city(cfg.out, cfg.preset, cfg.seed, cfg.workers)


def run(config: ConvertConfig | InspectConfig | SynthConfig):
    """Run the job `config` describes."""
    if isinstance(config, ConvertConfig):
        return convert(config)
    if isinstance(config, InspectConfig):
        return inspect_dataset(config)
    if isinstance(config, SynthConfig):
        return synth(config)
    raise TypeError(f"no data job for {type(config).__name__}")
