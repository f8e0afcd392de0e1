"""Image-space effects of the synthetic city: transient occluders and the camera's processing.

Occluders (cars, pedestrians, trees) are drawn into the linear-light image with anti-aliased boxes and
ellipses, lit like the scene; cars light up at night. The camera then applies exposure, white balance,
saturation, gamma and sensor noise and quantises to 8 bits. Blur and JPEG compression happen when the
image is written (see `city.py`).
"""

from __future__ import annotations

import numpy as np

from .views import CAR, PERSON, TREE, Views

F32 = np.float32
_GLASS = np.array([0.08, 0.1, 0.13], F32)
_TYRE = np.array([0.04, 0.04, 0.04], F32)
_SKIN = np.array([0.62, 0.46, 0.36], F32)
_BARK = np.array([0.25, 0.17, 0.1], F32)
_HEADLIGHT = np.array([3.0, 2.6, 1.8], F32)


def _paint_box(img: np.ndarray, x0: float, x1: float, y0: float, y1: float, colour: np.ndarray) -> None:
    """Blend an axis-aligned box [x0, x1] x [y0, y1] (pixels, continuous) into img (H, W, 3) in place."""
    h, w = img.shape[:2]
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h)
    if c0 >= c1 or r0 >= r1:
        return
    xs = np.arange(c0, c1, dtype=F32) + 0.5
    ys = np.arange(r0, r1, dtype=F32) + 0.5
    cov_x = np.clip(np.minimum(xs + 0.5, x1) - np.maximum(xs - 0.5, x0), 0, 1)
    cov_y = np.clip(np.minimum(ys + 0.5, y1) - np.maximum(ys - 0.5, y0), 0, 1)
    alpha = (cov_y[:, None] * cov_x[None, :])[..., None]
    region = img[r0:r1, c0:c1]
    region += (colour - region) * alpha


def _paint_ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, colour: np.ndarray) -> None:
    """Blend an ellipse centred at (cx, cy) with radii (rx, ry) (pixels) into img (H, W, 3) in place."""
    h, w = img.shape[:2]
    c0, c1 = max(int(np.floor(cx - rx)), 0), min(int(np.ceil(cx + rx)), w)
    r0, r1 = max(int(np.floor(cy - ry)), 0), min(int(np.ceil(cy + ry)), h)
    if c0 >= c1 or r0 >= r1 or rx <= 0 or ry <= 0:
        return
    xs = (np.arange(c0, c1, dtype=F32) + 0.5 - cx) / rx
    ys = (np.arange(r0, r1, dtype=F32) + 0.5 - cy) / ry
    dist = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    alpha = np.clip((1.0 - dist) * min(rx, ry) + 0.5, 0.0, 1.0)[..., None]
    region = img[r0:r1, c0:c1]
    region += (colour - region) * alpha


def _draw_car(img, u, bottom, size, colour, light, night):
    h = size * 0.6
    w = 2.3 * h
    _paint_box(img, u - 0.5 * w, u + 0.5 * w, bottom - 0.62 * h, bottom - 0.12 * h, colour * light)
    _paint_box(img, u - 0.3 * w, u + 0.25 * w, bottom - h, bottom - 0.55 * h, _GLASS * light)
    for side in (-0.3, 0.3):
        _paint_ellipse(img, u + side * w, bottom - 0.13 * h, 0.15 * h, 0.15 * h, _TYRE * light)
    if night > 0.2:
        for side in (-0.44, 0.44):
            _paint_ellipse(img, u + side * w, bottom - 0.45 * h, 0.07 * h, 0.05 * h, _HEADLIGHT * night)


def _draw_person(img, u, bottom, size, colour, light):
    h = size * 1.2
    _paint_box(img, u - 0.07 * h, u + 0.07 * h, bottom - 0.47 * h, bottom, colour[::-1] * 0.5 * light)
    _paint_box(img, u - 0.12 * h, u + 0.12 * h, bottom - 0.82 * h, bottom - 0.45 * h, colour * light)
    _paint_ellipse(img, u, bottom - 0.9 * h, 0.075 * h, 0.085 * h, _SKIN * light)


def _draw_tree(img, u, bottom, size, colour, light):
    h = size * 1.6
    leaves = np.array([0.08 + 0.3 * colour[0], 0.22 + 0.25 * colour[1], 0.05 + 0.1 * colour[2]], F32) * light
    _paint_box(img, u - 0.035 * h, u + 0.035 * h, bottom - 0.55 * h, bottom, _BARK * light)
    _paint_ellipse(img, u - 0.16 * h, bottom - 0.62 * h, 0.2 * h, 0.17 * h, leaves * 0.8)
    _paint_ellipse(img, u + 0.17 * h, bottom - 0.64 * h, 0.19 * h, 0.18 * h, leaves * 0.9)
    _paint_ellipse(img, u, bottom - 0.8 * h, 0.28 * h, 0.24 * h, leaves)


def draw_occluders(images: np.ndarray, views: Views) -> None:
    """Paint each view's occluders into images (n, H, W, 3) float32 linear RGB, in place.

    An occluder stands on the ground near the bottom of the frame; its size is `occluder_scale` of the
    image height (x0.6 for cars, x1.2 for people, x1.6 for trees), its horizontal centre `occluder_u`.
    """
    height, width = images.shape[1:3]
    light = (views.daylight * 0.85 + views.nightlight * 0.12)[:, None] * views.light_tint
    for i in range(len(views)):
        for k in np.flatnonzero(views.occluder_kind[i]):
            kind = views.occluder_kind[i, k]
            size = float(views.occluder_scale[i, k]) * height
            u = float(views.occluder_u[i, k]) * width
            bottom = height * (1.0 + 0.15 * views.occluder_scale[i, k])
            colour = views.occluder_colour[i, k].astype(F32)
            lit = light[i].astype(F32)
            if kind == CAR:
                _draw_car(images[i], u, bottom, size, colour, lit, float(views.nightlight[i]))
            elif kind == PERSON:
                _draw_person(images[i], u, bottom, size, colour, lit)
            elif kind == TREE:
                _draw_tree(images[i], u, bottom - 0.1 * height, size, colour, lit)


def develop(images: np.ndarray, views: Views) -> np.ndarray:
    """Camera processing: linear (n, H, W, 3) float32 -> (n, H, W, 3) uint8 sRGB-like.

    Exposure and white balance per channel, saturation about the grey level, a soft shoulder for
    highlights, gamma 1 / (1.8 * views.gamma), Gaussian sensor noise of std `views.noise` (deterministic
    from the image's key).
    """
    gain = (views.exposure[:, None] * views.white_balance).astype(F32)[:, None, None, :]
    x = images * gain
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + (x - grey) * views.saturation.astype(F32)[:, None, None, None]
    x = np.maximum(x, 0.0)
    x = x / (1.0 + 0.15 * x)  # highlight shoulder: lit windows and lamps saturate gently
    x = x ** (1.0 / (1.8 * views.gamma)).astype(F32)[:, None, None, None]
    for i in range(len(views)):
        rng = np.random.default_rng(int(views.seed[i]))
        x[i] += rng.standard_normal(x.shape[1:], dtype=F32) * F32(views.noise[i])
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
