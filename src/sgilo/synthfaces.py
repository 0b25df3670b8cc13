"""Synthfaces: the embedded demo data set of procedural, aligned, face-like RGB images.

Every face is a pure function of `(seed, index)`: its attributes are sampled first from
`numpy.random.default_rng([seed, index])` and only then drawn, so the attributes (and, at a given resolution,
the pixels) never depend on anything else. The attributes vary independently (head shape, skin, hair, eyes,
brows, nose, mouth, glasses, pose, lighting, background) so a small GAN has real factors of variation to learn
while the layout stays as regular as an aligned FFHQ crop.

Drawing happens on a supersampled canvas with PIL and is box-filtered down, which anti-aliases every edge.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, PngImagePlugin
from tqdm import tqdm

from sgilo.io import atomic_path

HAIR_STYLES = ("short", "long", "bald", "bangs", "bun", "curly")
HAIR_COLORS = {
    "black": (28, 24, 24),
    "dark_brown": (62, 42, 30),
    "brown": (110, 72, 44),
    "blond": (218, 180, 112),
    "red": (165, 70, 36),
    "grey": (168, 168, 170),
}
EYE_COLORS = {
    "brown": (100, 62, 34),
    "dark_brown": (56, 36, 22),
    "blue": (70, 120, 180),
    "green": (78, 124, 72),
    "hazel": (132, 102, 54),
    "grey": (120, 130, 140),
}
GLASSES_COLORS = {
    "black": (22, 22, 24),
    "tortoise": (96, 56, 30),
    "gold": (204, 168, 72),
    "silver": (178, 180, 188),
    "red": (170, 32, 42),
}
# Light to dark, roughly along the range of real skin reflectances; a tone is a point on this polyline.
SKIN_TONES = np.array(
    [(255, 228, 206), (244, 202, 172), (228, 180, 142), (204, 148, 104), (164, 108, 72), (118, 74, 50), (82, 52, 36)],
    dtype=np.float64,
)
PNG_KEY = "sgilo-synthfaces"
_MAX_CANVAS = 2048
_IMAGE_NAME = re.compile(r"^(\d{6})\.png$")


# ------------------------------------------------------------------------------------------------ attributes
def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    # Rounded so that the CSV holds exactly the values the face was drawn from.
    return round(float(rng.uniform(lo, hi)), 4)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(min(max(c, 0), 255)):02x}" for c in rgb)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _skin_rgb(tone: float, warmth: float) -> np.ndarray:
    pos = tone * (len(SKIN_TONES) - 1)
    i = min(int(pos), len(SKIN_TONES) - 2)
    rgb = SKIN_TONES[i] + (pos - i) * (SKIN_TONES[i + 1] - SKIN_TONES[i])
    return np.clip(rgb * np.array([1 + warmth, 1.0, 1 - warmth]), 0, 255)


def _sample_face(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "head_width": _u(rng, 0.5, 0.6),
        "head_aspect": _u(rng, 1.18, 1.36),
        "jaw_width": _u(rng, 0.5, 0.95),
        "skin_tone": _u(rng, 0.0, 1.0),
        "skin_warmth": _u(rng, -0.04, 0.06),
        "hair_style": _pick(rng, HAIR_STYLES),
        "hair_color": _pick(rng, list(HAIR_COLORS)),
        "hair_shade": _u(rng, 0.85, 1.15),
        "hairline": _u(rng, 0.45, 0.6),
        "hair_length": _u(rng, 1.0, 1.5),
        "eye_color": _pick(rng, list(EYE_COLORS)),
        "eye_spacing": _u(rng, 0.34, 0.44),
        "eye_size": _u(rng, 0.14, 0.19),
        "eye_openness": _u(rng, 0.45, 0.7),
        "gaze": _u(rng, -0.25, 0.25),
        "brow_thickness": _u(rng, 0.014, 0.04),
        "brow_tilt": _u(rng, -0.35, 0.35),
        "brow_gap": _u(rng, 0.07, 0.13),
        "nose_length": _u(rng, 0.26, 0.36),
        "nose_width": _u(rng, 0.1, 0.16),
    }


def _sample_mouth_and_extras(rng: np.random.Generator) -> dict[str, Any]:
    glasses = bool(rng.random() < 0.35)
    return {
        "mouth_width": _u(rng, 0.26, 0.42),
        "smile": _u(rng, -0.3, 1.0),
        "lip_tint": _u(rng, 0.2, 0.6),
        "lip_thickness": _u(rng, 0.6, 1.4),
        "mouth_open": bool(rng.random() < 0.3),
        "mouth_opening": _u(rng, 0.2, 0.5),
        "glasses": glasses,
        "glasses_shape": _pick(rng, ("round", "square")) if glasses else "none",
        "glasses_color": _pick(rng, list(GLASSES_COLORS)) if glasses else "none",
        "glasses_thickness": _u(rng, 0.016, 0.032) if glasses else 0.0,
    }


def _sample_scene(rng: np.random.Generator, skin: np.ndarray) -> dict[str, Any]:
    pose = {
        "rotation_deg": _u(rng, -8.0, 8.0),
        "shift_x": _u(rng, -0.04, 0.04),
        "shift_y": _u(rng, -0.04, 0.04),
        "scale": _u(rng, 0.93, 1.07),
        "yaw": _u(rng, -1.0, 1.0),
        "light_angle_deg": _u(rng, 0.0, 360.0),
        "light_strength": _u(rng, 0.05, 0.35),
        "exposure": _u(rng, 0.9, 1.1),
        "clothes_color": _hex(rng.integers(20, 236, size=3)),
        "background": _pick(rng, ("solid", "gradient")),
        "background_angle_deg": _u(rng, 0.0, 360.0),
    }
    # The face must stand out from the background; a bounded number of rng draws keeps this deterministic.
    colors = []
    for _ in range(2):
        for _attempt in range(32):
            rgb = rng.integers(0, 256, size=3)
            if np.linalg.norm(rgb - skin) > 110:
                break
        colors.append(_hex(rgb))
    return {**pose, "background_color1": colors[0], "background_color2": colors[1]}


def _check_seed_index(seed: int, index: int) -> None:
    for name, value in (("seed", seed), ("index", index)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"synthfaces: {name} must be a non-negative integer, got {value!r}")


def sample_attributes(seed: int, index: int) -> dict[str, Any]:
    """The attributes of face `index` of `seed`, without drawing it (plain ints/floats/strs/bools)."""
    _check_seed_index(seed, index)
    rng = np.random.default_rng([int(seed), int(index)])
    attrs = _sample_face(rng)
    attrs.update(_sample_mouth_and_extras(rng))
    attrs.update(_sample_scene(rng, _skin_rgb(attrs["skin_tone"], attrs["skin_warmth"])))
    return attrs


# ------------------------------------------------------------------------------------------------- drawing
class _Pen:
    """Draws in face units: the frame spans [-1, 1] on both axes, y pointing down."""

    def __init__(self, image: Image.Image) -> None:
        self.size = image.size[0]
        self.draw = ImageDraw.Draw(image)

    def p(self, x: float, y: float) -> tuple[float, float]:
        return ((x + 1) * 0.5 * self.size, (y + 1) * 0.5 * self.size)

    def box(self, cx: float, cy: float, rx: float, ry: float) -> list[float]:
        return [*self.p(cx - rx, cy - ry), *self.p(cx + rx, cy + ry)]

    def px(self, length: float) -> int:
        return max(1, round(length * 0.5 * self.size))

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, fill: Any = None, outline: Any = None, width: float = 0.0
    ) -> None:
        self.draw.ellipse(self.box(cx, cy, rx, ry), fill=fill, outline=outline, width=self.px(width) if width else 0)

    def poly(self, points: Sequence[tuple[float, float]], fill: Any) -> None:
        self.draw.polygon([self.p(x, y) for x, y in points], fill=fill)

    def line(self, points: Sequence[tuple[float, float]], fill: Any, width: float) -> None:
        self.draw.line([self.p(x, y) for x, y in points], fill=fill, width=self.px(width), joint="curve")


def _shade(rgb: Sequence[float], factor: float) -> tuple[int, int, int, int]:
    r, g, b = (round(min(max(c * factor, 0), 255)) for c in rgb[:3])
    return (r, g, b, 255)


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int, int]:
    return _shade([a[i] + t * (b[i] - a[i]) for i in range(3)], 1.0)


class _Geom:
    """Landmark positions derived from the attributes (face units, before pose)."""

    def __init__(self, a: dict[str, Any]) -> None:
        self.hx, self.hy = 0.0, 0.06
        self.hw = a["head_width"]
        self.hh = self.hw * a["head_aspect"]
        self.fx = self.hx + 0.16 * self.hw * a["yaw"]  # features slide sideways when the head turns
        self.ey = self.hy - 0.06 * self.hh
        self.ex = a["eye_spacing"] * self.hw
        self.erx = a["eye_size"] * self.hw
        self.ery = self.erx * a["eye_openness"]
        self.nose_y = self.ey + a["nose_length"] * self.hh
        self.chin_y = self.hy + self.hh
        self.mouth_y = self.nose_y + 0.36 * (self.chin_y - self.nose_y)
        self.hairline_y = self.hy - a["hairline"] * self.hh


def _head_outline(g: _Geom, jaw: float, grow: float = 1.0, n: int = 56) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    s, c = np.sin(t), np.cos(t)
    # Narrow only the lower half, more towards the chin: jaw_width 1 is an ellipse, small values a V-shaped chin.
    taper = np.where(s > 0, 1.0 - (1.0 - jaw) * s**2, 1.0)
    return list(zip(g.hx + g.hw * grow * c * taper, g.hy + g.hh * grow * s))


def _draw_body(pen: _Pen, g: _Geom, skin: np.ndarray, a: dict[str, Any]) -> None:
    neck_w = 0.42 * g.hw
    neck = _shade(skin, 0.78)
    pen.poly(
        [
            (g.hx - neck_w, g.hy + 0.4 * g.hh),
            (g.hx + neck_w, g.hy + 0.4 * g.hh),
            (g.hx + neck_w * 1.1, 1.1),
            (g.hx - neck_w * 1.1, 1.1),
        ],
        neck,
    )
    top = g.chin_y + 0.08
    pen.ellipse(g.hx, top + 0.5, 2.3 * g.hw, 0.5, fill=_shade(_rgb(a["clothes_color"]), 1.0))
    pen.ellipse(g.hx, top, neck_w * 1.1, 0.07, fill=neck)
    for side in (-1, 1):
        # The ear on the far side of a turned head shows less.
        rx = 0.12 * g.hw * (1 - 0.35 * side * a["yaw"])
        ear_x = g.hx + side * 0.97 * g.hw
        pen.ellipse(ear_x, g.ey + 0.08 * g.hh, rx, 0.17 * g.hh, fill=_shade(skin, 0.9))
        pen.ellipse(ear_x + side * 0.02 * g.hw, g.ey + 0.08 * g.hh, rx * 0.45, 0.09 * g.hh, fill=_shade(skin, 0.72))


def _draw_back_hair(pen: _Pen, g: _Geom, hair: tuple, a: dict[str, Any]) -> None:
    style = a["hair_style"]
    if style == "long":
        bottom = g.hy + g.hh * a["hair_length"]
        pen.ellipse(g.hx, g.hy - 0.15 * g.hh, 1.28 * g.hw, 0.98 * g.hh, fill=hair)
        pen.draw.rounded_rectangle(
            [*pen.p(g.hx - 1.28 * g.hw, g.hy - 0.15 * g.hh), *pen.p(g.hx + 1.28 * g.hw, bottom)],
            radius=pen.px(0.35 * g.hw),
            fill=hair,
        )
    elif style == "bun":
        pen.ellipse(g.hx, g.hy - 1.02 * g.hh, 0.38 * g.hw, 0.34 * g.hw, fill=hair)
    elif style == "bald":
        # Drawn behind the head, only the rim of the fringe around the back shows, above and behind the ears.
        pen.ellipse(g.hx, g.ey - 0.1 * g.hh, 1.13 * g.hw, 0.3 * g.hh, fill=hair)
    elif style == "curly":
        for t in np.linspace(math.pi - 0.5, 2 * math.pi + 0.5, 15):
            cx = g.hx + 1.12 * g.hw * math.cos(t)
            cy = g.hy - 0.02 + 1.04 * g.hh * math.sin(t)
            pen.ellipse(cx, cy, 0.24 * g.hw, 0.24 * g.hw, fill=hair)


def _hairline(g: _Geom, a: dict[str, Any]) -> list[tuple[float, float]]:
    """The lower edge of the hair over the forehead, right to left."""
    style, hl = a["hair_style"], g.hairline_y
    u = np.linspace(0.9, -0.9, 13)
    if style == "bangs":
        y = g.ey - a["brow_gap"] * g.hh - 0.28 * g.hh + 0.035 * g.hh * (np.arange(13) % 2)
    elif style == "long":
        y = hl + 0.28 * g.hh * np.abs(u)  # centre parting, curtains towards the temples
    elif style == "curly":
        y = hl + 0.1 * g.hh * u**2 + 0.05 * g.hh * (np.arange(13) % 2)
    else:
        y = hl + 0.16 * g.hh * u**2
    return list(zip(g.hx + u * g.hw, y))


def _draw_front_hair(pen: _Pen, g: _Geom, hair: tuple, a: dict[str, Any]) -> None:
    style = a["hair_style"]
    if style == "bald":
        return
    cy, ry = g.hy - 0.02, g.hh * (1.04 if style != "bun" else 1.01)
    side_bottom = g.ey + (0.3 * g.hh if style == "long" else -0.02 * g.hh)
    a0 = math.asin(min(max((side_bottom - cy) / ry, -0.9), 0.95))
    t = np.linspace(math.pi - a0, 2 * math.pi + a0, 36)
    outer = list(zip(g.hx + 1.06 * g.hw * np.cos(t), cy + ry * np.sin(t)))
    inner = [(g.hx + 0.9 * g.hw, side_bottom), *_hairline(g, a), (g.hx - 0.9 * g.hw, side_bottom)]
    pen.poly(outer + inner, hair)
    if style == "long":
        _draw_side_locks(pen, g, hair, a)
    _draw_hair_texture(pen, g, hair, a)


def _draw_side_locks(pen: _Pen, g: _Geom, hair: tuple, a: dict[str, Any]) -> None:
    bottom = g.hy + g.hh * a["hair_length"]
    for side in (-1, 1):
        xs = [0.84, 0.88, 0.95, 1.02, 1.05, 1.32, 1.3, 1.1]
        ys = [g.hairline_y + 0.2 * g.hh, g.ey + 0.1 * g.hh, g.mouth_y, g.chin_y, bottom, bottom, g.ey, g.hairline_y]
        pen.poly([(g.hx + side * x * g.hw, y) for x, y in zip(xs, ys)], hair)


def _draw_hair_texture(pen: _Pen, g: _Geom, hair: tuple, a: dict[str, Any]) -> None:
    # A few strands in a darker shade read as hair rather than a hat.
    dark = _shade(hair, 0.72)
    crown = (g.hx + 0.2 * g.hw, g.hy - 1.0 * g.hh)
    if a["hair_style"] == "curly":
        for k, t in enumerate(np.linspace(math.pi + 0.3, 2 * math.pi - 0.3, 7)):
            cx, cy = g.hx + 0.8 * g.hw * math.cos(t), g.hy - 0.02 + 0.85 * g.hh * math.sin(t)
            box = pen.box(cx, cy, 0.1 * g.hw, 0.1 * g.hw)
            pen.draw.arc(box, 40 + 50 * (k % 3), 260 + 50 * (k % 3), fill=dark, width=pen.px(0.012))
        return
    for x, y in _hairline(g, a)[2:-2:3]:
        mid = ((x + crown[0]) / 2 + 0.06 * g.hw, (y + crown[1]) / 2)
        pen.line([(x, y - 0.03 * g.hh), mid, crown], dark, 0.012)


def _draw_eyes(pen: _Pen, g: _Geom, a: dict[str, Any], hair: tuple) -> None:
    iris = EYE_COLORS[a["eye_color"]]
    lash = _shade(hair, 0.45) if a["hair_color"] not in ("blond", "grey") else (50, 40, 36, 255)
    r_iris = 0.96 * min(g.ery, 0.62 * g.erx)
    for side in (-1, 1):
        cx = g.fx + side * g.ex
        pen.ellipse(cx, g.ey, g.erx, g.ery, fill=(245, 243, 238, 255))
        ix = cx + a["gaze"] * g.erx * 0.5
        pen.ellipse(ix, g.ey, r_iris, r_iris, fill=_shade(iris, 1.0))
        pen.ellipse(ix, g.ey, 0.45 * r_iris, 0.45 * r_iris, fill=(12, 10, 10, 255))
        pen.ellipse(ix - 0.35 * r_iris, g.ey - 0.35 * r_iris, 0.22 * r_iris, 0.22 * r_iris, fill=(255, 255, 255, 255))
        box = pen.box(cx, g.ey, g.erx * 1.02, g.ery * 1.05)
        pen.draw.arc(box, 180, 360, fill=lash, width=pen.px(0.014))
        _draw_brow(pen, g, a, hair, cx, side)


def _draw_brow(pen: _Pen, g: _Geom, a: dict[str, Any], hair: tuple, cx: float, side: int) -> None:
    y = g.ey - g.ery - a["brow_gap"] * g.hh
    inner, outer = cx - side * 1.0 * g.erx, cx + side * 1.25 * g.erx
    tilt = a["brow_tilt"] * g.erx  # positive: inner end lower, an angry look; negative: worried
    color = _shade(hair, 0.75 if a["hair_color"] in ("blond", "grey") else 0.9)
    pts = [(inner, y + tilt * 0.5), (cx + side * 0.2 * g.erx, y - 0.35 * g.erx), (outer, y - tilt * 0.5 + 0.1 * g.erx)]
    pen.line(pts, color, a["brow_thickness"])


def _draw_nose(pen: _Pen, g: _Geom, skin: np.ndarray, a: dict[str, Any]) -> None:
    nx = g.fx + 0.08 * g.hw * a["yaw"]  # the tip sticks out, so it moves further than the eyes
    half = a["nose_width"] * g.hw
    shadow_side = -1 if math.cos(math.radians(a["light_angle_deg"])) > 0 else 1
    top = (g.fx + shadow_side * 0.12 * half, g.ey + 0.05 * g.hh)
    pen.line([top, (nx + shadow_side * 0.7 * half, g.nose_y - 0.4 * half)], _shade(skin, 0.82), 0.016)
    pen.ellipse(nx, g.nose_y - 0.2 * half, 0.75 * half, 0.5 * half, fill=_shade(skin, 0.93))
    for side in (-1, 1):
        pen.ellipse(nx + side * 0.45 * half, g.nose_y, 0.28 * half, 0.17 * half, fill=_shade(skin, 0.55))


def _band(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> list[tuple[float, float]]:
    """The polygon between two curves over the same x."""
    return list(zip(x, top)) + list(zip(x[::-1], bottom[::-1]))


def _draw_mouth(pen: _Pen, g: _Geom, skin: np.ndarray, a: dict[str, Any]) -> None:
    half = a["mouth_width"] * g.hw
    t = np.linspace(-1.0, 1.0, 17)
    x = g.fx + 0.05 * g.hw * a["yaw"] + t * half
    seam = g.mouth_y - a["smile"] * 0.3 * half * t**2  # corners rise with a smile
    arc = np.sqrt(1.0 - t**2)
    lip = _mix(skin, (176, 62, 74), a["lip_tint"])
    upper = 0.17 * half * a["lip_thickness"] * (1 - 0.35 * np.exp(-((t / 0.12) ** 2)))  # the dip of the cupid's bow
    gap = a["mouth_opening"] * half * arc if a["mouth_open"] else np.zeros_like(t)
    pen.poly(_band(x, seam, seam - upper * arc), _shade(lip, 0.92))
    pen.poly(_band(x, seam + gap, seam + gap + 0.24 * half * a["lip_thickness"] * arc), lip)
    if a["mouth_open"]:
        pen.poly(_band(x, seam, seam + gap), (58, 18, 24, 255))
        pen.poly(_band(x[3:-3], seam[3:-3], (seam + 0.35 * gap)[3:-3]), (238, 232, 220, 255))  # upper teeth
    else:
        pen.line(list(zip(x, seam)), _shade(lip, 0.55), 0.01)


def _draw_glasses(pen: _Pen, g: _Geom, a: dict[str, Any]) -> None:
    color = _shade(GLASSES_COLORS[a["glasses_color"]], 1.0)
    width = a["glasses_thickness"]
    rx, ry = 1.55 * g.erx, max(2.0 * g.ery, 1.05 * g.erx)
    for side in (-1, 1):
        cx = g.fx + side * g.ex
        if a["glasses_shape"] == "round":
            pen.ellipse(cx, g.ey, rx, ry, outline=color, width=width)
        else:
            pen.draw.rounded_rectangle(
                pen.box(cx, g.ey, rx, ry), radius=pen.px(0.3 * ry), outline=color, width=pen.px(width)
            )
        pen.line([(cx + side * rx, g.ey - 0.3 * ry), (g.hx + side * 0.98 * g.hw, g.ey - 0.1 * ry)], color, width)
    pen.line(
        [(g.fx - g.ex + rx, g.ey - 0.25 * ry), (g.fx, g.ey - 0.4 * ry), (g.fx + g.ex - rx, g.ey - 0.25 * ry)],
        color,
        width,
    )


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(coords, coords)


def _ramp(size: int, angle_deg: float) -> np.ndarray:
    xs, ys = _grid(size)
    angle = math.radians(angle_deg)
    return (math.cos(angle) * xs + math.sin(angle) * ys) / math.sqrt(2)  # within [-1, 1]


def _background(size: int, a: dict[str, Any]) -> Image.Image:
    c1, c2 = (np.array(_rgb(a[k]), dtype=np.float32) for k in ("background_color1", "background_color2"))
    if a["background"] == "solid":
        return Image.new("RGB", (size, size), tuple(int(v) for v in c1))
    t = (_ramp(size, a["background_angle_deg"]) + 1)[..., None] * 0.5
    return Image.fromarray(np.clip(c1 + t * (c2 - c1), 0, 255).astype(np.uint8), "RGB")


def _light(face: Image.Image, a: dict[str, Any]) -> Image.Image:
    arr = np.asarray(face).astype(np.float32)
    gain = a["exposure"] * (1 + a["light_strength"] * _ramp(face.size[0], a["light_angle_deg"]))
    arr[..., :3] *= gain[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")


def _pose(face: Image.Image, a: dict[str, Any]) -> Image.Image:
    size = face.size[0]
    angle, s = math.radians(a["rotation_deg"]), a["scale"]
    cx = cy = size / 2
    tx, ty = a["shift_x"] * size / 2, a["shift_y"] * size / 2
    # AFFINE maps each output pixel back to its input: undo the translation, then the rotation and scale.
    m00, m01, m10, m11 = math.cos(angle) / s, math.sin(angle) / s, -math.sin(angle) / s, math.cos(angle) / s
    c = cx - m00 * (cx + tx) - m01 * (cy + ty)
    f = cy - m10 * (cx + tx) - m11 * (cy + ty)
    return face.transform((size, size), Image.Transform.AFFINE, (m00, m01, c, m10, m11, f), Image.Resampling.BILINEAR)


def _draw_face(size: int, a: dict[str, Any]) -> Image.Image:
    g = _Geom(a)
    skin = _skin_rgb(a["skin_tone"], a["skin_warmth"])
    hair = _shade(HAIR_COLORS[a["hair_color"]], a["hair_shade"])
    face = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pen = _Pen(face)
    _draw_back_hair(pen, g, hair, a)
    _draw_body(pen, g, skin, a)
    pen.poly(_head_outline(g, a["jaw_width"]), _shade(skin, 1.0))
    _draw_eyes(pen, g, a, hair)
    _draw_nose(pen, g, skin, a)
    _draw_mouth(pen, g, skin, a)
    _draw_front_hair(pen, g, hair, a)
    if a["glasses"]:
        _draw_glasses(pen, g, a)
    return face


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, (int, np.integer)) or not 32 <= resolution <= 1024 or resolution & (resolution - 1):
        raise ValueError(f"synthfaces: resolution must be a power of two in [32, 1024], got {resolution!r}")


def render_face(seed: int, index: int, resolution: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Face `index` of `seed` as a uint8 (resolution, resolution, 3) array, with its attributes."""
    _check_resolution(resolution)
    attrs = sample_attributes(seed, index)
    factor = max(1, min(4, _MAX_CANVAS // resolution))
    size = resolution * factor
    face = _pose(_light(_draw_face(size, attrs), attrs), attrs)
    image = _background(size, attrs).convert("RGBA")
    image.alpha_composite(face)
    # reduce() is an exact box filter over each factor x factor block: the anti-aliasing step.
    image = image.convert("RGB").reduce(factor) if factor > 1 else image.convert("RGB")
    return np.asarray(image).copy(), attrs


# ------------------------------------------------------------------------------------------------- writing
def _stamp(seed: int, index: int, resolution: int) -> str:
    return f"seed={seed} index={index} resolution={resolution}"


def _is_done(path: Path, seed: int, index: int, resolution: int) -> bool:
    """An image from an earlier, interrupted run of the same settings: complete, right size, mode and stamp."""
    try:
        with Image.open(path) as im:
            im.load()
            return (
                im.size == (resolution, resolution)
                and im.mode == "RGB"
                and im.text.get(PNG_KEY) == _stamp(seed, index, resolution)
            )
    except (OSError, SyntaxError, ValueError):
        return False


def _write_png(pixels: np.ndarray, path: Path, stamp: str) -> None:
    info = PngImagePlugin.PngInfo()
    # The stamp lets a rerun with other settings in the same folder tell stale images from its own.
    info.add_text(PNG_KEY, stamp)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format="PNG", pnginfo=info)


def _clean_stale(images: Path, total: int) -> None:
    # Temp files of a killed run, and images past the end of a larger earlier run, would otherwise linger.
    for path in images.iterdir():
        match = _IMAGE_NAME.match(path.name)
        if (path.name.startswith(".") and path.name.endswith(".tmp")) or (match and int(match.group(1)) >= total):
            path.unlink(missing_ok=True)


def write_synthfaces(
    out_dir: str | Path, seed: int, n_train: int, n_test: int, resolution: int, progress: bool = True
) -> pd.DataFrame:
    """Write `images/{id:06d}.png` and `index.csv` (id, split, path, attributes...) under `out_dir`; resumable."""
    _check_resolution(resolution)
    _check_seed_index(seed, 0)
    if min(n_train, n_test) < 0 or n_train + n_test < 1:
        raise ValueError(f"synthfaces: need n_train, n_test >= 0 and at least one image, got {n_train}, {n_test}")
    out_dir = Path(out_dir)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    total = n_train + n_test
    _clean_stale(images, total)
    rows = []
    for i in tqdm(range(total), desc="synthfaces", unit="img", file=sys.stderr, disable=not progress):
        path = images / f"{i:06d}.png"
        if _is_done(path, seed, i, resolution):
            attrs = sample_attributes(seed, i)
        else:
            pixels, attrs = render_face(seed, i, resolution)
            _write_png(pixels, path, _stamp(seed, i, resolution))
        rows.append({"id": i, "split": "train" if i < n_train else "test", "path": f"images/{i:06d}.png", **attrs})
    index = pd.DataFrame(rows)
    with atomic_path(out_dir / "index.csv") as tmp:
        index.to_csv(tmp, index=False)
    return index
