"""Static street furniture: trees and lamp posts standing on the kerb lines of every street.

They are part of the world (same place, same tree in every capture), so they are landmarks, but trees
change with the season (foliage density and colour are per-image conditions) and they occlude facades
differently from every viewpoint. Both kerb lines are vertical planes y = +-(half_width - SIDEWALK_M +
KERB_INSET_M) in the street frame; an object is a shape on that plane (x along the street, z up, metres).
Trees stand in `TREE_SLOT_M` slots with probability `TREE_PROBABILITY`; lamp posts every LAMP_SPACING_M.
"""

from __future__ import annotations

import numpy as np

from .texture import band, hash_unit, value_noise

F32 = np.float32
KERB_INSET_M = 0.5
TREE_SLOT_M = 10.0
TREE_PROBABILITY = 0.15
LAMP_SPACING_M = 25.0
LAMP_HEIGHT_M = 6.5
_SUMMER = np.array([0.16, 0.30, 0.09], F32)
_AUTUMN = np.array([0.55, 0.33, 0.08], F32)
_BARK = np.array([0.22, 0.16, 0.11], F32)
_METAL = np.array([0.2, 0.21, 0.23], F32)
_LAMP_LIGHT = np.array([3.0, 2.5, 1.6], F32)


def street_objects(street: np.ndarray, side: np.ndarray, x: np.ndarray, z: np.ndarray, fp: np.ndarray,
                   foliage: np.ndarray, autumn: np.ndarray, nightlight: np.ndarray):
    """Trees and lamp posts where m rays cross a kerb plane.

    street, side: (m,) street index and kerb side (0 left, 1 right); x, z: (m,) crossing point, metres;
    fp: (m,) pixel footprint there, metres; foliage: (m,) in [0, 1] leaf density (1 = summer); autumn:
    (m,) in [0, 1] leaf colour from green to orange; nightlight: (m,) strength of artificial light.

    Returns hit (k,) indices of the crossings that touch an object, and for those coverage (k,) in
    [0, 1], albedo (k, 3) and emissive (k, 3) (lamp heads at night).
    """
    strip = (2 * street + side).astype(np.int32)
    slot = np.floor(x / TREE_SLOT_M).astype(np.int32)
    has_tree = hash_unit(strip, slot, 31) < TREE_PROBABILITY
    centre = (slot + 0.3 + 0.4 * hash_unit(strip, slot, 32)) * TREE_SLOT_M
    radius = 1.8 + 1.4 * hash_unit(strip, slot, 34)
    lamp_x = (np.floor(x / LAMP_SPACING_M) + 0.5) * LAMP_SPACING_M
    near_tree = has_tree & (np.abs(x - centre) < radius + 1.0 + fp)
    near_lamp = (np.abs(x - lamp_x) < 0.5 + fp) & (z < LAMP_HEIGHT_M + 0.05 + fp)
    hit = np.flatnonzero(near_tree | near_lamp)
    strip, slot, x, z, fp = strip[hit], slot[hit], x[hit], z[hit], fp[hit]
    has_tree, centre, radius, lamp_x = has_tree[hit], centre[hit], radius[hit], lamp_x[hit]
    foliage, autumn, nightlight = foliage[hit], autumn[hit], nightlight[hit]

    trunk_h = 2.4 + 1.2 * hash_unit(strip, slot, 33)
    crown_z = trunk_h + 0.8 * radius
    dx = x - centre
    trunk = band(dx, -0.18, 0.18, fp) * band(z, 0.0, crown_z, fp) * has_tree
    ragged = value_noise(x * 1.6, z * 1.6, strip) - 0.5
    dist = np.sqrt(dx * dx + ((z - crown_z) * 1.15) ** 2)
    crown_edge = np.clip((radius * (0.75 + 0.25 * foliage) + 0.9 * ragged - dist) / fp + 0.5, 0.0, 1.0)
    leaves = value_noise(x * 4.0, z * 4.0, strip + 7)
    density = np.clip((foliage - 0.25 + 0.6 * leaves) * 2.0, 0.0, 1.0)  # bare branches show through
    crown = crown_edge * density * has_tree
    tone = (0.7 + 0.6 * leaves)[:, None] * (0.85 + 0.3 * hash_unit(strip, slot, 35))[:, None]
    leaf_colour = (_SUMMER + (_AUTUMN - _SUMMER) * autumn[:, None]) * tone

    pole = band(x - lamp_x, -0.09, 0.09, fp) * band(z, 0.0, LAMP_HEIGHT_M, fp)
    head = band(x - lamp_x, -0.5, 0.5, fp) * band(z, LAMP_HEIGHT_M - 0.25, LAMP_HEIGHT_M + 0.05, fp)

    coverage = np.maximum(np.maximum(trunk, crown), np.maximum(pole, head))
    albedo = _BARK + (leaf_colour - _BARK) * (crown / np.maximum(np.maximum(trunk, crown), 1e-6))[:, None]
    lamp = np.maximum(pole, head)
    albedo = albedo + (_METAL - albedo) * (lamp * (1 - crown))[:, None]
    emissive = (head * nightlight)[:, None] * _LAMP_LIGHT
    return hit, coverage, albedo, emissive
