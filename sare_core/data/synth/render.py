"""Ray-cast renderer of the synthetic city: street corridor, facades, backdrops through cross streets, sky.

Each pixel's ray leaves a pinhole camera standing in a street corridor (street frame: x along the street,
y to its left, z up; metres). It meets the left facade (y = +half_width), the right one (y = -half_width),
the road (z = 0) or the sky. Where the facade has a gap (a cross street), the ray continues to a backdrop
strip `BACKDROP_DEPTH_M` further out. Trees and lamp posts on the two kerb lines are composited over that,
farther line first. Colours are linear RGB (not yet exposed or gamma-encoded); all work is vectorised over
every pixel of a batch of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .facade import WARM_LIGHT, shade_facade
from .layout import BACKDROP_DEPTH_M, SIDEWALK_M, STRIP_RUNOUT_M, CityLayout
from .street import KERB_INSET_M, LAMP_SPACING_M, street_objects
from .texture import band, periodic_band, smoothstep, value_noise
from .views import DAY, DUSK, NIGHT, OVERCAST, Views

F32 = np.float32
# Sky colours per time of day: (horizon, zenith), linear RGB.
SKY = {
    DAY: ((0.78, 0.85, 0.95), (0.30, 0.50, 0.88)),
    OVERCAST: ((0.80, 0.81, 0.83), (0.60, 0.62, 0.66)),
    DUSK: ((1.00, 0.60, 0.32), (0.20, 0.22, 0.48)),
    NIGHT: ((0.06, 0.05, 0.07), (0.008, 0.012, 0.035)),
}
FOG_RANGE_M = {DAY: 500.0, OVERCAST: 380.0, DUSK: 420.0, NIGHT: 260.0}


def _camera_rays(views: Views, width: int, height: int):
    """Unnormalised ray directions (dx, dy, dz), each (n * height * width,) float32, and focal (n,) px."""
    focal = (0.5 * width / np.tan(0.5 * views.hfov)).astype(F32)
    u = (np.arange(width, dtype=F32) + 0.5 - 0.5 * width)[None, None, :] / focal[:, None, None]
    v = -(np.arange(height, dtype=F32) + 0.5 - 0.5 * height)[None, :, None] / focal[:, None, None]
    cr, sr = (np.cos(views.roll).astype(F32)[:, None, None], np.sin(views.roll).astype(F32)[:, None, None])
    a = u * cr - v * sr
    b = u * sr + v * cr
    cy, sy = np.cos(views.yaw).astype(F32)[:, None, None], np.sin(views.yaw).astype(F32)[:, None, None]
    cp, sp = np.cos(views.pitch).astype(F32)[:, None, None], np.sin(views.pitch).astype(F32)[:, None, None]
    dx = cy * cp + a * sy - b * cy * sp
    dy = sy * cp - a * cy - b * sy * sp
    dz = sp + b * cp
    return dx.reshape(-1), dy.reshape(-1), dz.reshape(-1), focal


def _sky_colours(views: Views) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) horizon and zenith colours of each image's sky."""
    horizon = np.array([SKY[t][0] for t in range(4)], dtype=F32)[views.time]
    zenith = np.array([SKY[t][1] for t in range(4)], dtype=F32)[views.time]
    return horizon, zenith


def _shade_sky(dx, dy, dz, dnorm, horizon, zenith, cloud_offset, cloudiness, daylight):
    """Sky gradient with clouds on a plane above the city (clouds move between captures)."""
    elevation = np.clip(dz / dnorm, 0.0, 1.0)
    colour = horizon + (zenith - horizon) * np.sqrt(elevation)[:, None]
    up = np.maximum(dz, F32(0.03))
    cx = dx / up * 2.5 + cloud_offset[:, 0]
    cy = dy / up * 2.5 + cloud_offset[:, 1]
    density = 0.65 * value_noise(cx, cy, 11) + 0.35 * value_noise(cx * 2.7, cy * 2.7, 12)
    cover = smoothstep(1.0 - cloudiness, 1.05 - 0.5 * cloudiness, density) * np.clip(elevation * 6.0, 0.0, 1.0)
    cloud = (0.02 + 0.9 * np.minimum(daylight, 1.0))[:, None] * np.array([0.97, 0.97, 1.0], F32)
    return colour + (cloud - colour) * (0.85 * cover)[:, None]


def _shade_ground(gx, gy, fp, half_width, light, night_light):
    """Road with a dashed centre line, kerbs and paved sidewalks; street-lamp pools at night."""
    road_edge = half_width - SIDEWALK_M
    ay = np.abs(gy)
    grain = value_noise(gx * 1.7, gy * 1.7, 21)
    asphalt = (0.18 + 0.1 * grain)[:, None] * np.array([1.0, 1.0, 1.05], F32)
    dashes, _ = periodic_band(gx, 8.0, 0.0, 4.0, fp)
    centre_line = band(gy, -0.1, 0.1, fp) * dashes
    colour = asphalt + (np.array([0.85, 0.75, 0.35], F32) - asphalt) * centre_line[:, None]
    tiles, _ = periodic_band(gx, 1.5, 0.0, 0.06, fp)
    paving = (0.46 + 0.08 * grain - 0.12 * tiles)[:, None] * np.array([1.0, 0.97, 0.93], F32)
    sidewalk = band(ay, road_edge, half_width + 0.5, fp)
    kerb = band(ay, road_edge, road_edge + 0.25, fp)
    colour = colour + (paving - colour) * sidewalk[:, None]
    colour = colour + (0.62 - colour) * kerb[:, None]
    lamp_dx = gx - (np.floor(gx / LAMP_SPACING_M) + 0.5) * LAMP_SPACING_M
    lamp_dy = ay - (half_width - 1.5)
    pool = 0.04 + 1.0 * np.exp(-(lamp_dx**2 + lamp_dy**2) / 30.0)
    return colour * (light + (night_light * pool)[:, None] * WARM_LIGHT)


def _composite_far_to_near(out: np.ndarray, layers: list) -> None:
    """Blend two layers of (pixel indices (k,), distance (k,), coverage (k,), colour (k, 3)) into out
    (N, 3) in place; where both cover a pixel the farther one goes first."""
    distance = []
    for idx, t, _, _ in layers:
        full = np.full(len(out), np.inf, dtype=F32)
        full[idx] = t
        distance.append(full)
    far = [t > distance[1 - k][idx] for k, (idx, t, _, _) in enumerate(layers)]
    for first in (True, False):
        for k, (idx, _, cov, colour) in enumerate(layers):
            sel = far[k] if first else ~far[k]
            pixels = idx[sel]
            out[pixels] += (colour[sel] - out[pixels]) * cov[sel, None]


@dataclass
class _Rays:
    """Per-pixel camera rays of a batch, flattened to N = n * height * width (street frame, metres)."""

    dx: np.ndarray
    dy: np.ndarray
    dz: np.ndarray
    dnorm: np.ndarray
    image: np.ndarray  # (N,) index of the pixel's image in the batch
    focal: np.ndarray  # (n,) focal length, pixels
    street: np.ndarray
    half_width: np.ndarray
    cam_x: np.ndarray
    cam_y: np.ndarray
    cam_h: np.ndarray
    length: np.ndarray  # photographed length of the pixel's street


@dataclass
class _Hits:
    """Where each ray ends: on a facade (building index, x along the strip, height z, ray parameter t),
    on the ground, or in the sky. `left`/`sideways`/`safe_dy` describe the ray's lateral direction."""

    left: np.ndarray
    sideways: np.ndarray
    safe_dy: np.ndarray
    t: np.ndarray
    x: np.ndarray
    z: np.ndarray
    building: np.ndarray
    facade: np.ndarray
    ground: np.ndarray
    sky: np.ndarray


@dataclass
class _Light:
    """Per-image (n,) lighting: daylight / nightlight strength, tint (n, 3), sun on each wall, sky colours
    (n, 3), fog range (m) and colour (n, 3)."""

    daylight: np.ndarray
    nightlight: np.ndarray
    tint: np.ndarray
    sun: np.ndarray
    sun_on_left: np.ndarray
    sun_on_right: np.ndarray
    horizon: np.ndarray
    zenith: np.ndarray
    fog_range: np.ndarray
    fog_colour: np.ndarray


def _make_rays(layout: CityLayout, views: Views, width: int, height: int) -> _Rays:
    per_image = width * height

    def expand(values) -> np.ndarray:
        return np.repeat(np.asarray(values), per_image, axis=0)

    dx, dy, dz, focal = _camera_rays(views, width, height)
    return _Rays(
        dx=dx, dy=dy, dz=dz, dnorm=np.sqrt(dx * dx + dy * dy + dz * dz),
        image=np.repeat(np.arange(len(views)), per_image), focal=focal, street=expand(views.street),
        half_width=expand(layout.half_width[views.street]).astype(F32),
        cam_x=expand(views.x).astype(F32), cam_y=expand(views.y).astype(F32), cam_h=expand(views.height).astype(F32),
        length=expand(layout.street_length[views.street]).astype(F32),
    )


def _trace(layout: CityLayout, rays: _Rays) -> _Hits:
    """Intersect every ray with its street's facades (through cross-street gaps to the backdrops)."""
    bld = layout.buildings
    left = rays.dy > 1e-4
    sideways = left | (rays.dy < -1e-4)
    wall_y = np.where(left, rays.half_width, -rays.half_width)
    safe_dy = np.where(sideways, rays.dy, F32(1.0))
    t_hit = np.where(sideways, (wall_y - rays.cam_y) / safe_dy, F32(np.inf))
    x_hit = rays.cam_x + np.where(sideways, t_hit, 0) * rays.dx
    strip = 4 * rays.street + np.where(left, 0, 1)
    end = rays.length + STRIP_RUNOUT_M - 1
    in_strip = sideways & (x_hit > -STRIP_RUNOUT_M + 1) & (x_hit < end)
    building = bld.lookup(strip, np.clip(x_hit, -STRIP_RUNOUT_M + 1, end))

    # Through a cross street: the backdrop strip further out.
    idx = np.flatnonzero(in_strip & bld.is_gap[building])
    if len(idx):
        back_y = wall_y[idx] + np.where(left[idx], BACKDROP_DEPTH_M, -BACKDROP_DEPTH_M).astype(F32)
        t_back = (back_y - rays.cam_y[idx]) / safe_dy[idx]
        x_back = rays.cam_x[idx] + t_back * rays.dx[idx]
        in_strip[idx] = (x_back > -STRIP_RUNOUT_M + 1) & (x_back < end[idx])
        building[idx] = bld.lookup(strip[idx] + 2, np.clip(x_back, -STRIP_RUNOUT_M + 1, end[idx]))
        t_hit[idx], x_hit[idx] = t_back, x_back
    z_hit = rays.cam_h + np.where(in_strip, t_hit, 0) * rays.dz
    facade = in_strip & (z_hit >= 0) & (z_hit <= bld.height[building])
    ground = ~facade & (rays.dz < 0)
    return _Hits(left=left, sideways=sideways, safe_dy=safe_dy, t=t_hit, x=x_hit, z=z_hit, building=building,
                 facade=facade, ground=ground, sky=~facade & ~ground)


def _image_light(layout: CityLayout, views: Views) -> _Light:
    horizon, zenith = _sky_colours(views)
    daylight = views.daylight.astype(F32)
    nightlight = views.nightlight.astype(F32)
    sun_angle = views.sun_azimuth - layout.street_angle[views.street]  # sun azimuth in the street frame
    return _Light(
        daylight=daylight, nightlight=nightlight, tint=views.light_tint.astype(F32), sun=views.sun.astype(F32),
        sun_on_left=np.maximum(0.0, -np.sin(sun_angle)).astype(F32),  # the left wall faces -y
        sun_on_right=np.maximum(0.0, np.sin(sun_angle)).astype(F32),
        horizon=horizon, zenith=zenith,
        fog_range=np.array([FOG_RANGE_M[t] for t in range(4)], dtype=F32)[views.time],
        fog_colour=horizon * (0.35 + 0.65 * np.minimum(daylight, 1.0))[:, None]
        + (0.05 * nightlight)[:, None] * WARM_LIGHT,
    )


def _fogged(colour: np.ndarray, distance: np.ndarray, light: _Light, im: np.ndarray) -> np.ndarray:
    fog = np.clip(distance / light.fog_range[im], 0.0, 1.0) ** 1.5
    return colour + (light.fog_colour[im] - colour) * fog[:, None]


def _render_facades(layout: CityLayout, views: Views, rays: _Rays, hits: _Hits, light: _Light, out) -> None:
    idx = np.flatnonzero(hits.facade)
    if not len(idx):
        return
    im = rays.image[idx]
    t, x, z = hits.t[idx], hits.x[idx], hits.z[idx]
    fp = t / rays.focal[im]
    incidence = np.abs(rays.dy[idx]) / rays.dnorm[idx]
    albedo, emissive, glass = shade_facade(
        layout.buildings, layout.palette, hits.building[idx], x, z, fp / np.maximum(incidence, 0.1), fp,
        views.light_seed[im], views.lit_fraction[im].astype(F32))
    sunlit = np.where(hits.left[idx], light.sun_on_left[im], light.sun_on_right[im]) * light.sun[im]
    lamp_dx = x - (np.floor(x / LAMP_SPACING_M) + 0.5) * LAMP_SPACING_M
    lamp = 0.015 + 0.5 * np.exp(-z / 4.0) * np.exp(-(lamp_dx**2) / 60.0)
    lit = (light.daylight[im] * (0.55 + sunlit))[:, None] * light.tint[im] + (
        light.nightlight[im] * lamp)[:, None] * WARM_LIGHT
    reflection = (0.35 * light.daylight[im])[:, None] * light.zenith[im]
    colour = albedo * lit + emissive * light.nightlight[im, None] + glass[:, None] * reflection
    out[idx] = _fogged(colour, t * rays.dnorm[idx], light, im)


def _render_ground(rays: _Rays, hits: _Hits, light: _Light, out) -> None:
    idx = np.flatnonzero(hits.ground)
    if not len(idx):
        return
    im = rays.image[idx]
    t = rays.cam_h[idx] / -rays.dz[idx]
    fp = t / rays.focal[im] / np.maximum(-rays.dz[idx] / rays.dnorm[idx], 0.05)
    lit = (light.daylight[im] * (0.6 + 0.6 * light.sun[im]))[:, None] * light.tint[im]
    colour = _shade_ground(rays.cam_x[idx] + t * rays.dx[idx], rays.cam_y[idx] + t * rays.dy[idx], fp,
                           rays.half_width[idx], lit, light.nightlight[im])
    out[idx] = _fogged(colour, t * rays.dnorm[idx], light, im)


def _render_sky(views: Views, rays: _Rays, hits: _Hits, light: _Light, out) -> None:
    idx = np.flatnonzero(hits.sky)
    if not len(idx):
        return
    im = rays.image[idx]
    out[idx] = _shade_sky(rays.dx[idx], rays.dy[idx], rays.dz[idx], rays.dnorm[idx], light.horizon[im],
                          light.zenith[im], views.cloud_offset[im].astype(F32), views.cloudiness[im].astype(F32),
                          light.daylight[im])


def _render_street_objects(views: Views, rays: _Rays, hits: _Hits, light: _Light, out) -> None:
    """Trees and lamp posts on both kerb lines, in front of whatever the ray hit behind them."""
    t_scene = np.full(len(out), np.inf, dtype=F32)
    t_scene[hits.facade] = hits.t[hits.facade]
    t_scene[hits.ground] = rays.cam_h[hits.ground] / -rays.dz[hits.ground]
    kerb = rays.half_width - (SIDEWALK_M - KERB_INSET_M)
    layers = []
    for side, plane_y in ((0, kerb), (1, -kerb)):
        t_plane = np.where(hits.sideways, (plane_y - rays.cam_y) / hits.safe_dy, F32(-1.0))
        z_plane = rays.cam_h + t_plane * rays.dz
        idx = np.flatnonzero((t_plane > 0.05) & (t_plane < t_scene) & (z_plane >= 0) & (z_plane < 10.0))
        im = rays.image[idx]
        t = t_plane[idx]
        x = rays.cam_x[idx] + t * rays.dx[idx]
        fp = t / rays.focal[im] / np.maximum(np.abs(rays.dy[idx]) / rays.dnorm[idx], 0.1)
        hit, cov, albedo, emissive = street_objects(
            rays.street[idx], np.full(len(idx), side), x, z_plane[idx], fp, views.foliage[im].astype(F32),
            views.autumn[im].astype(F32), light.nightlight[im])
        idx, im, t, x = idx[hit], im[hit], t[hit], x[hit]
        lamp_dx = x - (np.floor(x / LAMP_SPACING_M) + 0.5) * LAMP_SPACING_M
        lit = (light.daylight[im] * (0.5 + 0.5 * light.sun[im]))[:, None] * light.tint[im] + (
            light.nightlight[im] * (0.04 + 0.5 * np.exp(-(lamp_dx**2) / 40.0)))[:, None] * WARM_LIGHT
        layers.append((idx, t, cov, _fogged(albedo * lit + emissive, t * rays.dnorm[idx], light, im)))
    _composite_far_to_near(out, layers)


def render(layout: CityLayout, views: Views, width: int, height: int) -> np.ndarray:
    """Render n views to (n, height, width, 3) float32 linear RGB (roughly [0, 1], emissive may exceed)."""
    rays = _make_rays(layout, views, width, height)
    hits = _trace(layout, rays)
    light = _image_light(layout, views)
    out = np.zeros((len(rays.dx), 3), dtype=F32)
    _render_facades(layout, views, rays, hits, light, out)
    _render_ground(rays, hits, light, out)
    _render_sky(views, rays, hits, light, out)
    _render_street_objects(views, rays, hits, light, out)
    return out.reshape(len(views), height, width, 3)
