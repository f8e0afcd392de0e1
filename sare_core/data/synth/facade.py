"""Facade shading: what a point (x along the strip, z up, metres) on a building looks like.

A facade is a style (shared by many buildings across the city) plus building-specific details: colour
tint, window grid extent, shop front, door, sign with its lettering, awning and poster. Lit windows and
signs are emissive, so they carry over into night images while the walls fade out.
"""

from __future__ import annotations

import numpy as np

from .layout import GLASS_CURTAIN, MATERIALS, Buildings, StylePalette
from .texture import band, hash_unit, periodic_band, value_noise

F32 = np.float32
WARM_LIGHT = np.array([1.0, 0.78, 0.45], dtype=F32)
LETTER_PITCH_M = 0.5


def _blend(base: np.ndarray, colour: np.ndarray, amount: np.ndarray) -> None:
    """base += (colour - base) * amount, in place, only where amount > 0 (most features are sparse).

    base (m, 3); colour (3,) or (m, 3); amount (m,).
    """
    idx = np.flatnonzero(amount)
    if len(idx):
        target = colour if colour.ndim == 1 else colour[idx]
        base[idx] += (target - base[idx]) * amount[idx, None]


def _wall_material(bld: Buildings, pal: StylePalette, b, sty, x, lx, z, fp_x, fp_z) -> np.ndarray:
    """Wall albedo (m, 3): the building's colour, weathered, with its style's blocks and joints."""
    wall = bld.wall[b].astype(F32)
    grime = value_noise(x * 0.8, z * 0.8, b)
    wall *= (0.9 + 0.18 * grime)[:, None]
    height_f, width_f, joint, stagger, tone_amp, joint_f = MATERIALS[pal.texture[sty]].T
    course = pal.course_m[sty]
    block_h, block_w = course * height_f, course * width_f
    row_joint, row = periodic_band(z, block_h, 0.0, joint, fp_z)
    shift = (row & 1) * stagger * block_w
    col_joint, col = periodic_band(lx + shift, block_w, 0.0, joint, fp_x)
    joints = np.maximum(row_joint, col_joint) * (joint > 0)
    tone = 1.0 + tone_amp * (2.0 * hash_unit(b, row, col) - 1.0)
    return np.clip(wall * (tone * (1.0 + (joint_f - 1.0) * joints))[:, None], 0.0, 1.0)


def shade_facade(bld: Buildings, pal: StylePalette, b: np.ndarray, x: np.ndarray, z: np.ndarray,
                 fp_x: np.ndarray, fp_z: np.ndarray, light_seed: np.ndarray, lit_fraction: np.ndarray):
    """Shade m facade points.

    b: (m,) building index; x: (m,) metres along the strip; z: (m,) metres above the pavement; fp_x, fp_z:
    (m,) pixel footprint in metres (horizontal along the facade, vertical) for anti-aliasing; light_seed
    (m,) uint32 and lit_fraction (m,) choose the lit windows of the image's night.

    Returns albedo (m, 3) in [0, 1], emissive (m, 3) (light emitted at night, before the night level) and
    glass (m,) in [0, 1] (how much of the pixel reflects the sky by day).
    """
    z = z.astype(F32)
    sty = bld.style[b]
    lx = (x - bld.x0[b]).astype(F32)
    albedo = _wall_material(bld, pal, b, sty, x, lx, z, fp_x, fp_z)
    emissive = np.zeros_like(albedo)
    glass = np.zeros(len(b), dtype=F32)
    ground_h = pal.ground_h[sty]
    for part, shade in ((z > ground_h - 0.5, _shade_upper_floors), (z < ground_h + 0.5, _shade_ground_floor)):
        idx = np.flatnonzero(part)
        if len(idx):
            sub_albedo, sub_emissive, sub_glass = albedo[idx], emissive[idx], glass[idx]
            shade(bld, pal, b[idx], sty[idx], lx[idx], z[idx], fp_x[idx], fp_z[idx], light_seed[idx],
                  lit_fraction[idx], sub_albedo, sub_emissive, sub_glass)
            albedo[idx], emissive[idx], glass[idx] = sub_albedo, sub_emissive, sub_glass
    return np.clip(albedo, 0.0, 1.0), emissive, np.clip(glass, 0.0, 1.0)


def _shade_upper_floors(bld, pal, b, sty, lx, z, fp_x, fp_z, light_seed, lit_fraction, albedo, emissive, glass):
    """Window grid (framed or shuttered, own curtains, own night light), string courses, pilasters, murals
    and the cornice; updates albedo / emissive (k, 3) and glass (k,) in place."""
    height, ground_h, floor_h = bld.height[b], pal.ground_h[sty], pal.floor_h[sty]
    scale = bld.win_scale[b]
    spacing, win_w = pal.win_spacing[sty], pal.win_w[sty] * scale
    sill, win_h = pal.sill[sty], pal.win_h[sty] * scale
    curtain_wall = pal.texture[sty] == GLASS_CURTAIN  # the whole upper facade is glazing between mullions
    win_w = np.where(curtain_wall, spacing - 0.16, win_w)
    sill = np.where(curtain_wall, F32(0.1), sill)
    win_h = np.where(curtain_wall, floor_h - 0.2, win_h)
    zu = z - ground_h
    col_x = lx - bld.margin[b]
    rows, floor_i = periodic_band(zu, floor_h, sill, sill + win_h, fp_z)
    cols, col_i = periodic_band(col_x, spacing, 0.5 * (spacing - win_w), 0.5 * (spacing + win_w), fp_x)
    frame_rows, _ = periodic_band(zu, floor_h, sill - 0.15, sill + win_h + 0.15, fp_z)
    frame_cols, _ = periodic_band(col_x, spacing, 0.5 * (spacing - win_w) - 0.15, 0.5 * (spacing + win_w) + 0.15,
                                  fp_x)
    in_grid = (zu >= 0) & (floor_i < bld.num_floors[b]) & (col_i >= 0) & (col_i < bld.num_cols[b])
    window = rows * cols * in_grid
    frame = np.maximum(frame_rows * frame_cols * in_grid - window, 0.0)
    above_ground = band(zu, 0.0, height - ground_h - 0.7, fp_z)
    course, _ = periodic_band(zu, floor_h, 0.0, 0.25, fp_z)
    _blend(albedo, pal.cornice[sty], course * above_ground * pal.string_course[sty])
    pilaster, _ = periodic_band(col_x, spacing, 0.0, 0.35, fp_x)
    in_cols = (col_x >= 0) & (col_i <= bld.num_cols[b])
    _blend(albedo, pal.cornice[sty] * 0.9, pilaster * above_ground * in_cols * pal.pilasters[sty])
    shutters = pal.shutters[sty]
    shutter_cols, _ = periodic_band(col_x, spacing, 0.5 * (spacing - win_w) - 0.45 * win_w,
                                    0.5 * (spacing + win_w) + 0.45 * win_w, fp_x)
    _blend(albedo, pal.shutter[sty], np.maximum(shutter_cols * rows * in_grid - window, 0.0) * shutters)
    _blend(albedo, pal.frame[sty], frame * ~shutters)

    pane = hash_unit(b, floor_i, col_i)
    blinds = pane > 0.8
    glass_colour = np.where(blinds[:, None], np.array([0.72, 0.66, 0.55], F32) * (0.5 + pane)[:, None],
                            pal.glass[sty] * (0.6 + 0.8 * pane)[:, None])
    _blend(albedo, glass_colour, window)
    lit = hash_unit(b, floor_i, col_i, light_seed) < lit_fraction
    glow = window * lit * (0.35 + 0.65 * hash_unit(b, col_i, floor_i, 7))
    emissive += glow[:, None] * WARM_LIGHT

    mural_x0, mural_x1 = bld.mural_x0[b], bld.mural_x1[b]
    mural_z0, mural_z1 = bld.mural_z0[b], bld.mural_z1[b]
    mural = band(lx, mural_x0, mural_x1, fp_x) * band(z, mural_z0, mural_z1, fp_z) * bld.mural[b]
    stripes, _ = periodic_band(lx + z, 2.5, 0.0, 1.25, fp_x)
    radius = 0.4 * np.minimum(mural_x1 - mural_x0, mural_z1 - mural_z0)
    centre_dist = np.hypot(lx - 0.5 * (mural_x0 + mural_x1), z - 0.5 * (mural_z0 + mural_z1))
    disc = np.clip((radius - centre_dist) / fp_z + 0.5, 0.0, 1.0)
    pattern = np.where(bld.mural_kind[b] == 0, stripes, disc)
    colours = bld.mural_colours[b]
    painted = colours[:, 0] + (colours[:, 1] - colours[:, 0]) * pattern[:, None]
    _blend(albedo, painted, mural)
    glass += window * ~blinds * (1 - mural)
    emissive *= (1 - mural)[:, None]
    _blend(albedo, pal.cornice[sty], band(z, height - 0.7, height + 1.0, fp_z))


def _shade_ground_floor(bld, pal, b, sty, lx, z, fp_x, fp_z, light_seed, lit_fraction, albedo, emissive, glass):
    """Shop window with mullions or a door, posters, awnings and signs with lettering (signs and shop
    windows light up at night); updates albedo / emissive (k, 3) and glass (k,) in place."""
    width, ground_h = bld.x1[b] - bld.x0[b], pal.ground_h[sty]
    shop = bld.shop[b]
    shop_front = band(lx, 0.7, width - 0.7, fp_x) * band(z, 0.4, ground_h - 1.2, fp_z) * shop
    shop_colour = bld.shop_colour[b]
    mullions, _ = periodic_band(lx, 1.7, 0.0, 0.12, fp_x)
    _blend(albedo, shop_colour * 0.35, shop_front)
    _blend(albedo, pal.frame[sty], mullions * shop_front)
    glass += 0.7 * shop_front
    shop_lit = hash_unit(b, light_seed, 11) < 0.75
    emissive += (shop_front * shop_lit)[:, None] * (0.3 + 0.6 * shop_colour)
    door_x = bld.door_x[b]
    door = band(lx, door_x, door_x + 1.3, fp_x) * band(z, 0.0, 2.4, fp_z) * ~shop
    _blend(albedo, pal.frame[sty] * 0.5, door)

    poster_x, poster_z = bld.poster_x0[b], bld.poster_z0[b]
    poster = band(lx, poster_x, poster_x + 2.0, fp_x) * band(z, poster_z, poster_z + 1.4, fp_z) * (
        bld.poster[b] & ~shop)
    poster_colour = bld.poster_colour[b]
    upper = band(z, poster_z + 0.7, poster_z + 1.4, fp_z)
    _blend(albedo, (1.0 - poster_colour) + (2.0 * poster_colour - 1.0) * upper[:, None], poster)

    awning = band(lx, 0.4, width - 0.4, fp_x) * band(z, ground_h - 1.7, ground_h - 1.0, fp_z) * bld.awning[b]
    stripes, _ = periodic_band(lx, 1.0, 0.0, 0.5, fp_x)
    _blend(albedo, 0.9 + (bld.awning_colour[b] - 0.9) * stripes[:, None], awning)

    sign_x0, sign_x1 = bld.sign_x0[b], bld.sign_x1[b]
    sign = band(lx, sign_x0, sign_x1, fp_x) * band(z, ground_h - 1.05, ground_h - 0.2, fp_z) * bld.sign[b]
    letter_cols, cell = periodic_band(lx - sign_x0, LETTER_PITCH_M, 0.1, 0.4, fp_x)
    letters = letter_cols * band(z, ground_h - 0.85, ground_h - 0.4, fp_z) * sign * (hash_unit(b, cell, 3) < 0.7)
    sign_colour, letter_colour = bld.sign_colour[b], bld.letter_colour[b]
    _blend(albedo, sign_colour, sign)
    _blend(albedo, letter_colour, letters)
    emissive += sign[:, None] * sign_colour * 0.8 + letters[:, None] * letter_colour * 0.5
