"""The synthetic city's geometry: a facade style palette, a street grid per split and its buildings.

Coordinates: each split's area is a street grid in a local metric frame (east, north) whose origin sits at
`SPLIT_ORIGINS_UTM[split]` (UTM zone 17, Pittsburgh-like numbers). The three areas lie 6 km apart, so
train, val and test never share a place.

A street is a straight corridor. In its own frame x runs along the street (metres from its start) and y to
the left of the direction of travel; the facades stand at y = +half_width (left) and y = -half_width
(right). Every street owns four facade strips: 4*s + 0 left, 4*s + 1 right, and 4*s + 2 / 4*s + 3, the
left/right backdrops seen through the gaps where cross streets meet it (`BACKDROP_DEPTH_M` further out).
A strip is a run of buildings along x; gap segments (cross streets) carry `is_gap = True`.

Everything here is a deterministic function of (seed, split, preset) and cheap to rebuild, so each worker
process rebuilds the layout instead of receiving it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .presets import SPLITS, CityPreset
from .streams import ROLE_CODES, SPLIT_CODES

SPLIT_ORIGINS_UTM = {"train": (582_000.0, 4_474_000.0), "val": (588_000.0, 4_474_000.0),
                     "test": (594_000.0, 4_474_000.0)}
BACKDROP_DEPTH_M = 45.0
STRIP_RUNOUT_M = 350.0  # facades continue this far beyond the photographed part of a street
STRIP_KEY_M = 100_000.0  # building lookup key = strip * STRIP_KEY_M + x
SIDEWALK_M = 3.0

# Wall materials: texture id -> (block height / style course, block width / style course, joint width m,
# stagger (fraction of a block), tone amplitude per block, joint brightness factor). 0 is plain render and
# GLASS_CURTAIN a glazed facade; neither has blocks.
GLASS_CURTAIN = 4
MATERIALS = np.array([
    [1.0, 1.0, 0.0, 0.0, 0.0, 1.0],  # 0 render
    [1.0, 2.2, 0.05, 0.5, 0.18, 1.35],  # 1 brick, light mortar
    [6.0, 4.0, 0.07, 0.0, 0.06, 0.6],  # 2 metal panels
    [2.0, 3.5, 0.06, 0.5, 0.22, 0.7],  # 3 stone blocks
    [1.0, 1.0, 0.0, 0.0, 0.0, 1.0],  # 4 glass curtain wall
    [0.8, 400.0, 0.05, 0.0, 0.04, 0.65],  # 5 horizontal siding
], dtype=np.float32)
NUM_MATERIALS = len(MATERIALS)

# Colours are linear RGB albedos in [0, 1].
_WALL_COLOURS = np.array([
    [0.62, 0.30, 0.22], [0.70, 0.62, 0.50], [0.55, 0.55, 0.55], [0.80, 0.78, 0.72], [0.42, 0.25, 0.20],
    [0.66, 0.52, 0.36], [0.35, 0.40, 0.45], [0.75, 0.70, 0.55], [0.50, 0.35, 0.30], [0.60, 0.65, 0.62],
    [0.85, 0.82, 0.78], [0.30, 0.30, 0.32],
])
_SIGN_COLOURS = np.array([
    [0.85, 0.10, 0.10], [0.10, 0.35, 0.80], [0.10, 0.60, 0.25], [0.95, 0.80, 0.10], [0.90, 0.45, 0.05],
    [0.55, 0.15, 0.60], [0.05, 0.05, 0.05], [0.95, 0.95, 0.95], [0.05, 0.55, 0.60], [0.80, 0.20, 0.50],
])


@dataclass
class StylePalette:
    """Facade styles shared by the whole city, arrays of length K (lengths in metres, colours (K, 3)).

    texture: wall material (see MATERIALS: render, brick, metal panels, stone, glass
    curtain wall, siding); course_m: its block height scale. ground_h: height of the ground floor;
    floor_h: upper floors; win_w / win_h / win_spacing / sill: window grid of the upper floors.
    string_course / pilasters / shutters: bool, horizontal bands at floor lines, vertical bands between
    window columns, coloured shutters beside the windows (shutter (K, 3) colour).
    """

    wall: np.ndarray
    glass: np.ndarray
    frame: np.ndarray
    cornice: np.ndarray
    texture: np.ndarray
    course_m: np.ndarray
    ground_h: np.ndarray
    floor_h: np.ndarray
    win_w: np.ndarray
    win_h: np.ndarray
    win_spacing: np.ndarray
    sill: np.ndarray
    min_floors: np.ndarray
    max_floors: np.ndarray
    string_course: np.ndarray
    pilasters: np.ndarray
    shutters: np.ndarray
    shutter: np.ndarray


def make_palette(seed: int, num_styles: int) -> StylePalette:
    """Draw `num_styles` facade styles from the city seed (the same palette serves every split)."""
    rng = np.random.default_rng([int(seed), ROLE_CODES["city"], 0])
    k = num_styles
    wall = _WALL_COLOURS[rng.integers(0, len(_WALL_COLOURS), k)] * rng.uniform(0.9, 1.1, (k, 3))
    glass_tone = rng.uniform(0.08, 0.25, (k, 1))
    glass = np.clip(glass_tone * np.array([0.9, 1.0, 1.15]) + rng.uniform(-0.03, 0.03, (k, 3)), 0, 1)
    frame = np.where(rng.uniform(size=(k, 1)) < 0.5, rng.uniform(0.75, 0.95, (k, 1)) * np.ones(3),
                     wall * rng.uniform(0.4, 0.7, (k, 1)))
    cornice = np.clip(wall * rng.uniform(0.6, 1.3, (k, 1)), 0, 1)
    win_spacing = rng.uniform(1.8, 3.4, k)
    floor_h = rng.uniform(3.0, 4.0, k)
    min_floors = rng.integers(1, 4, k)
    return _as_float32(StylePalette(
        wall=np.clip(wall, 0, 1),
        glass=glass,
        frame=frame,
        cornice=cornice,
        texture=rng.integers(0, NUM_MATERIALS, k),
        course_m=rng.uniform(0.25, 0.45, k),
        ground_h=rng.uniform(3.8, 5.0, k),
        floor_h=floor_h,
        win_w=win_spacing * rng.uniform(0.35, 0.65, k),
        win_h=floor_h * rng.uniform(0.4, 0.6, k),
        win_spacing=win_spacing,
        sill=floor_h * rng.uniform(0.15, 0.3, k),
        min_floors=min_floors,
        max_floors=min_floors + rng.integers(1, 8, k),
        string_course=rng.uniform(size=k) < 0.4,
        pilasters=rng.uniform(size=k) < 0.3,
        shutters=rng.uniform(size=k) < 0.25,
        shutter=_SIGN_COLOURS[rng.integers(0, len(_SIGN_COLOURS), k)] * 0.7,
    ))


@dataclass
class Buildings:
    """All building segments of a split, sorted by (strip, x0); arrays of length B, lengths in metres.

    key0 = strip * STRIP_KEY_M + x0 is the sorted lookup key. A segment is a building unless `is_gap`.
    margin: distance from x0 to the first window column; num_cols / num_floors: window grid size.
    wall: (B, 3) wall colour: the style's, tinted, or (one in four) a colour of the building's own;
    win_scale: (B,) scales the style's window width and height. Shop fronts, doors, signs (x range,
    colour, lettering), awnings, posters and murals (a painted panel over the upper floors: x/z range,
    two colours (B, 2, 3), kind 0 stripes / 1 disc) make individual buildings recognisable within a style.
    """

    strip: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    key0: np.ndarray
    is_gap: np.ndarray
    style: np.ndarray
    height: np.ndarray
    num_floors: np.ndarray
    num_cols: np.ndarray
    margin: np.ndarray
    wall: np.ndarray
    win_scale: np.ndarray
    shop: np.ndarray
    shop_colour: np.ndarray
    door_x: np.ndarray
    sign: np.ndarray
    sign_x0: np.ndarray
    sign_x1: np.ndarray
    sign_colour: np.ndarray
    letter_colour: np.ndarray
    awning: np.ndarray
    awning_colour: np.ndarray
    poster: np.ndarray
    poster_x0: np.ndarray
    poster_z0: np.ndarray
    poster_colour: np.ndarray
    mural: np.ndarray
    mural_x0: np.ndarray
    mural_x1: np.ndarray
    mural_z0: np.ndarray
    mural_z1: np.ndarray
    mural_colours: np.ndarray
    mural_kind: np.ndarray

    def lookup(self, strip: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Index of the building segment covering x (metres) on each strip; same shape as x."""
        key = strip.astype(np.float64) * STRIP_KEY_M + x.astype(np.float64)
        idx = np.searchsorted(self.key0, key, side="right") - 1
        return np.clip(idx, 0, len(self.key0) - 1)


@dataclass
class CityLayout:
    """One split's street grid, buildings and database places.

    origin_utm: (2,) UTM (easting, northing) of the local frame's origin, metres.
    street_start: (S, 2) local (east, north) of each street's start; street_angle: (S,) radians from east;
    street_length: (S,) metres photographed; half_width: (S,) centre line to facade, metres.
    place_street / place_x: (P,) street index and metres along it of every database place, in capture order.
    covered_length: (S,) metres of each street that carry places (queries are sampled there).
    """

    split: str
    origin_utm: np.ndarray
    street_start: np.ndarray
    street_angle: np.ndarray
    street_length: np.ndarray
    half_width: np.ndarray
    place_street: np.ndarray
    place_x: np.ndarray
    covered_length: np.ndarray
    palette: StylePalette
    buildings: Buildings

    def to_utm(self, street: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(n, 2) UTM (easting, northing) of points x metres along and y metres left of their streets."""
        ang = self.street_angle[street]
        start = self.street_start[street]
        east = start[:, 0] + x * np.cos(ang) - y * np.sin(ang)
        north = start[:, 1] + x * np.sin(ang) + y * np.cos(ang)
        return np.stack([east, north], axis=1) + self.origin_utm


def _as_float32(table, keep: tuple[str, ...] = ()):
    """Store a table's float arrays as float32 (the renderer's precision), except the fields in `keep`."""
    for name, value in vars(table).items():
        if isinstance(value, np.ndarray) and value.dtype == np.float64 and name not in keep:
            setattr(table, name, value.astype(np.float32))
    return table


def _grid_lines(rng: np.random.Generator, count: int, block_m: tuple[float, float]) -> np.ndarray:
    """Positions (metres) of `count` parallel streets with random block sizes between them."""
    gaps = rng.uniform(block_m[0], block_m[1], max(count - 1, 0))
    return np.concatenate([[0.0], np.cumsum(gaps)])


def _strip_segments(rng, length: float, gaps: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Cut the strip [-RUNOUT, length + RUNOUT] into building widths (8-26 m) and the given gap intervals.

    Returns (boundaries (n+1,), is_gap (n,)).
    """
    lo, hi = -STRIP_RUNOUT_M, length + STRIP_RUNOUT_M
    widths = rng.uniform(8.0, 26.0, int((hi - lo) / 8.0) + 2)
    cuts = lo + np.concatenate([[0.0], np.cumsum(widths)])
    cuts = cuts[cuts < hi]
    for g0, g1 in gaps:  # drop cuts inside a gap or too close to its edges, then add the gap's edges
        cuts = cuts[(cuts < g0 - 3.0) | (cuts > g1 + 3.0)]
    edges = [c for g in gaps for c in g if lo < c < hi]
    bounds = np.unique(np.concatenate([cuts, edges, [lo, hi]]))
    mids = 0.5 * (bounds[:-1] + bounds[1:])
    is_gap = np.zeros(len(mids), dtype=bool)
    for g0, g1 in gaps:
        is_gap |= (mids > g0) & (mids < g1)
    return bounds, is_gap


def _make_buildings(rng: np.random.Generator, palette: StylePalette, strips: list) -> Buildings:
    """Fill every strip's segments with building attributes; `strips` holds (strip id, bounds, is_gap)."""
    strip = np.concatenate([np.full(len(g), sid) for sid, _, g in strips]).astype(np.int64)
    x0 = np.concatenate([b[:-1] for _, b, _ in strips])
    x1 = np.concatenate([b[1:] for _, b, _ in strips])
    is_gap = np.concatenate([g for _, _, g in strips])
    n = len(x0)
    k = len(palette.wall)
    style = rng.integers(0, k, n)
    floors = palette.min_floors[style] + (rng.uniform(size=n) * (
        palette.max_floors[style] - palette.min_floors[style] + 1)).astype(np.int64)
    height = palette.ground_h[style] + floors * palette.floor_h[style] + rng.uniform(0.4, 1.2, n)
    width = x1 - x0
    num_cols = np.maximum(((width - 1.6) / palette.win_spacing[style]).astype(np.int64), 0)
    margin = 0.5 * (width - num_cols * palette.win_spacing[style])
    sign = rng.uniform(size=n) < 0.6
    sign_w = np.minimum(width - 1.0, rng.uniform(3.0, 9.0, n))
    sign_x0 = 0.5 + rng.uniform(size=n) * np.maximum(width - 1.0 - sign_w, 0.0)
    poster_x = rng.uniform(1.0, 4.0, n)
    mural_w = np.minimum(width - 1.0, rng.uniform(5.0, 12.0, n))
    mural_x0 = 0.5 + rng.uniform(size=n) * np.maximum(width - 1.0 - mural_w, 0.0)
    mural_z0 = palette.ground_h[style] + rng.uniform(0.5, 3.0, n)
    mural_z1 = np.minimum(mural_z0 + rng.uniform(5.0, 12.0, n), height - 1.0)
    return _as_float32(Buildings(
        strip=strip, x0=x0, x1=x1, key0=strip * STRIP_KEY_M + x0, is_gap=is_gap, style=style,
        height=height, num_floors=floors, num_cols=num_cols, margin=margin,
        wall=np.clip(np.where(rng.uniform(size=(n, 1)) < 0.25,
                              _WALL_COLOURS[rng.integers(0, len(_WALL_COLOURS), n)] * rng.uniform(0.8, 1.2, (n, 1)),
                              palette.wall[style] * rng.uniform(0.8, 1.2, (n, 3))), 0.0, 1.0),
        win_scale=rng.uniform(0.8, 1.25, n),
        shop=rng.uniform(size=n) < 0.55,
        shop_colour=rng.uniform(0.1, 0.6, (n, 3)),
        door_x=rng.uniform(0.5, 1.0, n) * np.maximum(width - 2.0, 0.5),
        sign=sign, sign_x0=sign_x0, sign_x1=sign_x0 + sign_w,
        sign_colour=_SIGN_COLOURS[rng.integers(0, len(_SIGN_COLOURS), n)],
        letter_colour=np.where(rng.uniform(size=(n, 1)) < 0.5, 0.95, 0.05) * np.ones(3),
        awning=(rng.uniform(size=n) < 0.35) & ~sign,
        awning_colour=_SIGN_COLOURS[rng.integers(0, len(_SIGN_COLOURS), n)],
        poster=rng.uniform(size=n) < 0.3,
        poster_x0=np.minimum(poster_x, np.maximum(width - 3.0, 0.0)),
        poster_z0=rng.uniform(0.6, 1.2, n),
        poster_colour=rng.uniform(0.05, 0.95, (n, 3)),
        mural=(rng.uniform(size=n) < 0.2) & (mural_z1 > mural_z0 + 3.0) & (mural_w > 4.0),
        mural_x0=mural_x0, mural_x1=mural_x0 + mural_w, mural_z0=mural_z0, mural_z1=mural_z1,
        mural_colours=rng.uniform(0.05, 0.95, (n, 2, 3)),
        mural_kind=rng.integers(0, 2, n),
    ), keep=("x0", "x1", "key0"))


def build_layout(preset: CityPreset, seed: int, split: str) -> CityLayout:
    """The street grid of `split`, sized so that its streets hold the split's database places."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = np.random.default_rng([int(seed), ROLE_CODES["city"], SPLIT_CODES[split]])
    num_db = preset.counts[split][0]
    num_places = -(-num_db // preset.views_per_place)
    mean_block = 0.5 * sum(preset.block_m)
    needed_m = num_places * preset.place_spacing_m
    # n east-west and n north-south streets of extent ~(n-1) * block cover about 2 n (n - 1) blocks.
    n = 2
    while 2 * n * max(n - 1, 1) * mean_block < needed_m * 1.05:
        n += 1
    north_lines = _grid_lines(rng, n, preset.block_m)  # y of east-west streets
    east_lines = _grid_lines(rng, n, preset.block_m)  # x of north-south streets
    extent_e, extent_n = east_lines[-1], north_lines[-1]
    half_width = rng.uniform(8.0, 12.0, 2 * n)

    starts, angles, lengths = [], [], []
    for y in north_lines:
        starts.append((0.0, y))
        angles.append(0.0)
        lengths.append(extent_e)
    for x in east_lines:
        starts.append((x, 0.0))
        angles.append(0.5 * np.pi)
        lengths.append(extent_n)
    street_start = np.array(starts)
    street_angle = np.array(angles)
    street_length = np.array(lengths)

    strips = []
    for s in range(2 * n):
        # cross streets meet street s where the other family's lines lie (metres along s)
        cross_at, cross_hw = (east_lines, half_width[n:]) if s < n else (north_lines, half_width[:n])
        gaps = [(c - w, c + w) for c, w in zip(cross_at, cross_hw)]
        for side in range(2):
            bounds, is_gap = _strip_segments(rng, street_length[s], gaps)
            strips.append((4 * s + side, bounds, is_gap))
        for side in range(2):
            bounds, is_gap = _strip_segments(rng, street_length[s], [])
            strips.append((4 * s + 2 + side, bounds, is_gap))
    palette = make_palette(seed, preset.num_styles)
    buildings = _make_buildings(rng, palette, strips)

    place_street, place_x, covered = [], [], np.zeros(2 * n)
    remaining = num_places
    for s in range(2 * n):
        if remaining <= 0:
            break
        xs = np.arange(0.0, street_length[s], preset.place_spacing_m)[:remaining]
        place_street.append(np.full(len(xs), s))
        place_x.append(xs)
        covered[s] = xs[-1] + 0.5 * preset.place_spacing_m if len(xs) else 0.0
        remaining -= len(xs)
    if remaining > 0:
        raise RuntimeError(f"street grid too small for {num_places} places ({remaining} left over)")
    return CityLayout(
        split=split,
        origin_utm=np.array(SPLIT_ORIGINS_UTM[split]),
        street_start=street_start,
        street_angle=street_angle,
        street_length=street_length,
        half_width=half_width,
        place_street=np.concatenate(place_street).astype(np.int64),
        place_x=np.concatenate(place_x),
        covered_length=covered,
        palette=palette,
        buildings=buildings,
    )
