"""Presets of the synthetic city: how many images per split, their size and how the camera samples streets.

Counts follow the NetVLAD splits they stand in for (Pitts30k, Pitts250k); `tiny` is for unit tests and
`small` is the CPU demo. Every database place is photographed with `len(db_yaws_deg) * len(db_pitches_deg)`
views (Pittsburgh: 12 yaws x 2 pitches = 24); the last place of a split may keep only some of its views so
that the database count is exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CityPreset:
    """Everything that sizes a synthetic city (appearance constants live in views and render).

    counts: split -> (database images, query images).
    image_size: (width, height) in pixels.
    db_yaws_deg / db_pitches_deg: the database views of every place, yaw relative to the street direction
        (0 = looking down the street), pitch above the horizon, degrees.
    place_spacing_m: distance between consecutive database places along a street, metres.
    block_m: (min, max) distance between parallel streets, metres.
    num_styles: size of the facade style palette shared by the whole city (perceptual aliasing: fewer
        styles, more look-alike buildings on different streets).
    db_hfov_deg: horizontal field of view of the database camera, degrees.
    chunk_images: images rendered per work unit (fixed, so output never depends on the worker count).
    shard_size: images per sub-folder on disk (<= 1000).
    """

    name: str
    counts: dict[str, tuple[int, int]]
    image_size: tuple[int, int]
    db_yaws_deg: tuple[float, ...]
    db_pitches_deg: tuple[float, ...] = (8.0,)
    place_spacing_m: float = 8.0
    block_m: tuple[float, float] = (70.0, 130.0)
    num_styles: int = 24
    db_hfov_deg: float = 60.0
    chunk_images: int = 256
    shard_size: int = 1000

    @property
    def views_per_place(self) -> int:
        return len(self.db_yaws_deg) * len(self.db_pitches_deg)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["counts"] = {split: {"database": c[0], "queries": c[1]} for split, c in self.counts.items()}
        return d


_YAWS_4 = (0.0, 90.0, 180.0, 270.0)
_YAWS_12 = tuple(30.0 * k for k in range(12))

PRESETS: dict[str, CityPreset] = {
    "tiny": CityPreset(
        name="tiny",
        counts={"train": (128, 32), "val": (96, 24), "test": (96, 24)},
        image_size=(96, 72),
        db_yaws_deg=_YAWS_4,
        chunk_images=64,
    ),
    "small": CityPreset(
        name="small",
        # 1,200 training queries: the demo trains on a fresh subset of them each epoch (more distinct
        # queries, same epoch cost). The training and validation databases are kept small because the
        # demo re-extracts them every epoch (re-mining, validation) and must finish in 10 minutes on a
        # slow 2-core host; the test area (3,000 + 400) is what results/synth_difficulty.json measures.
        counts={"train": (2000, 1200), "val": (1000, 200), "test": (3000, 400)},
        image_size=(160, 120),
        db_yaws_deg=_YAWS_12,
        place_spacing_m=6.0,
        chunk_images=128,
    ),
    "pitts30k": CityPreset(
        name="pitts30k",
        counts={"train": (10_000, 7_416), "val": (10_000, 7_608), "test": (10_000, 6_816)},
        image_size=(96, 72),
        db_yaws_deg=_YAWS_12,
        db_pitches_deg=(4.0, 26.0),
        place_spacing_m=10.0,
    ),
    "pitts250k": CityPreset(
        name="pitts250k",
        counts={"train": (91_464, 7_824), "val": (78_648, 7_608), "test": (83_952, 8_280)},
        image_size=(64, 48),
        db_yaws_deg=_YAWS_12,
        db_pitches_deg=(4.0, 26.0),
        place_spacing_m=10.0,
    ),
}


def get_preset(name: str) -> CityPreset:
    """The preset called `name`; ValueError listing the choices otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic city preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
