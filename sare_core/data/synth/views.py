"""Camera poses and capture conditions of the synthetic city's database and query images.

Database images are street-view style: a car-mounted camera 2.5 m up at every place along the streets,
looking in a fixed fan of yaws and pitches, in summer daylight (sunny or overcast; one capture drive per
`DRIVE_M` of street, so neighbouring places share their light). Queries come from another time and another
camera: anywhere along the photographed streets, from the road or the sidewalk, mostly facing a facade,
with their own zoom, tilt and roll; in day, overcast, dusk or night light, in summer, autumn or winter,
with stronger colour casts, noise, blur and more passers-by.

All values are pure functions of (seed, split, role, index) through `ImageStreams`, so any worker can
recompute any subset of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import SIDEWALK_M, CityLayout
from .presets import CityPreset
from .streams import ImageStreams

DAY, OVERCAST, DUSK, NIGHT = 0, 1, 2, 3
DB_TIME_PROBS = (0.85, 0.15, 0.0, 0.0)
DRIVE_M = 150.0  # database light is shared along 150 m stretches of street (one capture drive)
# Streams keyed by a place or a drive instead of an image get their keys offset so they never coincide.
PLACE_KEY_OFFSET = 1 << 41
DRIVE_KEY_OFFSET = 1 << 40
QUERY_TIME_PROBS = (0.35, 0.25, 0.2, 0.2)
DB_SEASON_PROBS = (1.0, 0.0, 0.0)  # summer, autumn, winter
QUERY_SEASON_PROBS = (0.5, 0.3, 0.2)
FACING_FRACTION = 0.6
SIDEWALK_FRACTION = 0.15
MAX_OCCLUDERS = 5
CAR, PERSON, TREE = 1, 2, 3


@dataclass
class Views:
    """Per-image camera and conditions, all arrays of length n (angles in radians, lengths in metres).

    street, x, y, height: camera on `street`, x along it, y to its left, height above the road.
    yaw: relative to the street direction (0 looks down the street, pi/2 at the left facade); pitch up,
    roll clockwise; hfov: horizontal field of view. utm: (n, 2) camera easting/northing.
    time: DAY/OVERCAST/DUSK/NIGHT. daylight, nightlight: strengths of sky light and artificial light;
    light_tint (n, 3): colour of the daylight; sun_azimuth: world angle from east; sun: direct-sun
    strength; lit_fraction: share of windows lit at night; light_seed: which windows (uint32).
    cloud_offset (n, 2), cloudiness: sky. foliage in [0, 1] (leaf density of the street trees, 1 = summer)
    and autumn in [0, 1] (leaf colour, green to orange): the season. exposure, white_balance (n, 3), gamma, saturation, noise, blur_px,
    jpeg_quality: the camera's processing. occluder_kind (n, K) 0 none / CAR / PERSON / TREE with
    occluder_u (horizontal centre, fraction of width), occluder_scale (fraction of height) and
    occluder_colour (n, K, 3). seed: (n,) uint64 per-image key for pixel noise.
    """

    street: np.ndarray
    x: np.ndarray
    y: np.ndarray
    height: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    hfov: np.ndarray
    utm: np.ndarray
    time: np.ndarray
    daylight: np.ndarray
    nightlight: np.ndarray
    light_tint: np.ndarray
    sun_azimuth: np.ndarray
    sun: np.ndarray
    lit_fraction: np.ndarray
    light_seed: np.ndarray
    cloud_offset: np.ndarray
    cloudiness: np.ndarray
    foliage: np.ndarray
    autumn: np.ndarray
    exposure: np.ndarray
    white_balance: np.ndarray
    gamma: np.ndarray
    saturation: np.ndarray
    noise: np.ndarray
    blur_px: np.ndarray
    jpeg_quality: np.ndarray
    occluder_kind: np.ndarray
    occluder_u: np.ndarray
    occluder_scale: np.ndarray
    occluder_colour: np.ndarray
    seed: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def database_positions(layout: CityLayout, preset: CityPreset, seed: int, indices: np.ndarray):
    """Camera position of database images `indices`: (street (n,), x (n,), y (n,)) in metres.

    Image i shows place i // views_per_place; each place's car position is jittered by up to 1 m along
    the street and 1.5 m across it (the capture car drives in a lane).
    """
    indices = np.asarray(indices, dtype=np.int64)
    place = indices // preset.views_per_place
    rng = ImageStreams(seed, layout.split, "database", PLACE_KEY_OFFSET + place)
    street = layout.place_street[place]
    x = layout.place_x[place] + rng.uniform(1, -1.0, 1.0)
    y = rng.uniform(2, -1.5, 1.5)
    return street, x, y


def query_positions(layout: CityLayout, seed: int, indices: np.ndarray):
    """Camera position of query images `indices`: (street (n,), x (n,), y (n,)) in metres.

    Uniform over the photographed length of the streets; across the street, SIDEWALK_FRACTION stand on a
    sidewalk (1.5 m from the facade), the others on the road (up to 80% of the way to the kerb).
    """
    rng = ImageStreams(seed, layout.split, "queries", indices)
    cum = np.concatenate([[0.0], np.cumsum(layout.covered_length)])
    along = rng.uniform(1, 0.0, cum[-1])
    street = np.clip(np.searchsorted(cum, along, side="right") - 1, 0, len(layout.covered_length) - 1)
    x = along - cum[street]
    hw = layout.half_width[street]
    across = rng.uniform(2, -1.0, 1.0)
    on_sidewalk = rng.uniform(3) < SIDEWALK_FRACTION
    y = np.where(on_sidewalk, np.sign(across) * (hw - 0.5 * SIDEWALK_M), across * 0.8 * (hw - SIDEWALK_M))
    return street, x, y


def _conditions(rng: ImageStreams, time: np.ndarray, light_rng: ImageStreams, query: bool) -> dict:
    """Light, sky and camera processing for the given times of day (see `Views`)."""
    n = len(time)
    day, overcast, dusk, night = (time == DAY), (time == OVERCAST), (time == DUSK), (time == NIGHT)
    daylight = np.select([day, overcast, dusk, night], [
        light_rng.uniform(40, 0.9, 1.1), light_rng.uniform(40, 0.6, 0.8),
        light_rng.uniform(40, 0.25, 0.4), light_rng.uniform(40, 0.01, 0.03)])
    nightlight = np.select([dusk, night], [light_rng.uniform(41, 0.4, 0.7), light_rng.uniform(41, 0.85, 1.1)], 0.0)
    warm = np.array([1.15, 0.82, 0.62])
    cool = np.array([0.75, 0.82, 1.1])
    tint = np.ones((n, 3))
    tint[day] = [1.0, 0.97, 0.92]
    tint[overcast] = [0.94, 0.97, 1.02]
    tint[dusk] = warm
    tint[night] = cool
    tint *= np.exp(light_rng.normal(42, 0.0, 0.04))[:, None]
    cast = 0.08 if query else 0.04
    white_balance = np.exp(np.stack([rng.normal(50 + c, 0.0, cast) for c in range(3)], axis=1))
    exposure = np.exp(rng.normal(53, 0.0, 0.18 if query else 0.1)) * np.where(dusk | night, 1.3, 1.0)
    return dict(
        daylight=daylight,
        nightlight=nightlight,
        light_tint=tint,
        sun_azimuth=light_rng.uniform(43, 0.0, 2 * np.pi),
        sun=np.select([day, dusk], [light_rng.uniform(44, 0.25, 0.55), light_rng.uniform(44, 0.1, 0.3)], 0.0),
        lit_fraction=light_rng.uniform(45, 0.25, 0.6),
        light_seed=(light_rng.uniform(46) * 2**32).astype(np.uint32),
        cloud_offset=np.stack([light_rng.uniform(47, 0, 1000), light_rng.uniform(48, 0, 1000)], axis=1),
        cloudiness=np.where(overcast, 0.0, light_rng.uniform(49, 0.0, 0.8)),
        **_season(light_rng, query),
        exposure=exposure,
        white_balance=white_balance,
        gamma=np.exp(rng.normal(54, 0.0, 0.08 if query else 0.03)),
        saturation=rng.uniform(55, 0.75, 1.25) if query else rng.uniform(55, 0.9, 1.1),
        noise=(rng.uniform(56, 0.004, 0.02) if query else rng.uniform(56, 0.002, 0.01))
        * np.where(night, 1.8, 1.0),
        blur_px=np.where(rng.uniform(57) < (0.5 if query else 0.15), rng.uniform(58, 0.3, 1.0), 0.0),
        jpeg_quality=(rng.uniform(59, 70, 92) if query else np.full(n, 92.0)).astype(np.int64),
    )


def _season(rng: ImageStreams, query: bool) -> dict:
    """Foliage and leaf colour: database in summer; queries in summer, autumn or winter (SEASON_PROBS)."""
    season = rng.choice(60, QUERY_SEASON_PROBS if query else DB_SEASON_PROBS)
    foliage = np.select([season == 0, season == 1], [rng.uniform(61, 0.85, 1.0), rng.uniform(61, 0.5, 0.9)],
                        rng.uniform(61, 0.0, 0.3))
    autumn = np.select([season == 0, season == 1], [rng.uniform(62, 0.0, 0.15), rng.uniform(62, 0.5, 1.0)],
                       rng.uniform(62, 0.6, 1.0))
    return dict(foliage=foliage, autumn=autumn)


def _occluders(rng: ImageStreams, n: int, expected: float) -> dict:
    """Transient objects per image: up to MAX_OCCLUDERS cars, people and trees (see `Views`)."""
    kinds = np.zeros((n, MAX_OCCLUDERS), dtype=np.int64)
    u = np.zeros((n, MAX_OCCLUDERS))
    scale = np.zeros((n, MAX_OCCLUDERS))
    colour = np.zeros((n, MAX_OCCLUDERS, 3))
    p_slot = expected / MAX_OCCLUDERS
    for k in range(MAX_OCCLUDERS):
        base = 100 + 10 * k
        present = rng.uniform(base) < p_slot
        kind = 1 + rng.choice(base + 1, (0.45, 0.35, 0.2))
        kinds[:, k] = np.where(present, kind, 0)
        u[:, k] = rng.uniform(base + 2, -0.1, 1.1)
        scale[:, k] = rng.uniform(base + 3, 0.1, 0.4)
        colour[:, k] = np.stack([rng.uniform(base + 4 + c, 0.05, 0.85) for c in range(3)], axis=1)
    return dict(occluder_kind=kinds, occluder_u=u, occluder_scale=scale, occluder_colour=colour)


def database_views(layout: CityLayout, preset: CityPreset, seed: int, indices: np.ndarray) -> Views:
    """Cameras and conditions of database images `indices` (index = place * views_per_place + view)."""
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    rng = ImageStreams(seed, layout.split, "database", indices)
    place = indices // preset.views_per_place
    drive = layout.place_street[place] * 100_000 + (layout.place_x[place] // DRIVE_M).astype(np.int64)
    drive_rng = ImageStreams(seed, layout.split, "database", DRIVE_KEY_OFFSET + drive)
    street, x, y = database_positions(layout, preset, seed, indices)
    view = indices % preset.views_per_place
    n_yaw = len(preset.db_yaws_deg)
    yaw = np.radians(np.asarray(preset.db_yaws_deg)[view % n_yaw]) + rng.normal(1, 0.0, np.radians(2.0))
    pitch = np.radians(np.asarray(preset.db_pitches_deg)[view // n_yaw]) + rng.normal(2, 0.0, np.radians(1.0))
    time = drive_rng.choice(30, DB_TIME_PROBS)
    return Views(
        street=street, x=x, y=y, height=np.full(n, 2.5), yaw=yaw, pitch=pitch, roll=np.zeros(n),
        hfov=np.full(n, np.radians(preset.db_hfov_deg)), utm=layout.to_utm(street, x, y), time=time,
        **_conditions(rng, time, drive_rng, query=False),
        **_occluders(rng, n, expected=0.6),
        seed=rng.keys.copy(),
    )


def _query_yaw(rng: ImageStreams) -> np.ndarray:
    """Query headings (radians, street frame): FACING_FRACTION aimed within 40 degrees of a facade's
    normal (people photograph buildings), the rest uniform."""
    facing = rng.uniform(9) < FACING_FRACTION
    towards = np.where(rng.uniform(10) < 0.5, 0.5 * np.pi, 1.5 * np.pi) + np.radians(rng.uniform(11, -40.0, 40.0))
    return np.where(facing, towards, rng.uniform(4, 0.0, 2 * np.pi))


def query_views(layout: CityLayout, seed: int, indices: np.ndarray) -> Views:
    """Cameras and conditions of query images `indices`: other time, other camera, other viewpoint."""
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    rng = ImageStreams(seed, layout.split, "queries", indices)
    street, x, y = query_positions(layout, seed, indices)
    on_sidewalk = np.abs(y) > layout.half_width[street] - SIDEWALK_M
    time = rng.choice(30, QUERY_TIME_PROBS)
    return Views(
        street=street, x=x, y=y, height=np.where(on_sidewalk, 1.6, rng.uniform(8, 1.5, 2.6)),
        yaw=_query_yaw(rng), pitch=np.radians(rng.uniform(5, 0.0, 15.0)),
        roll=np.radians(rng.normal(6, 0.0, 2.0)), hfov=np.radians(rng.uniform(7, 50.0, 72.0)),
        utm=layout.to_utm(street, x, y), time=time,
        **_conditions(rng, time, rng, query=True),
        **_occluders(rng, n, expected=1.0),
        seed=rng.keys.copy(),
    )
