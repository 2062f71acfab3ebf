"""Pictures of the Attention Inspector's records, drawn with Pillow and numpy only (no matplotlib, no ComfyUI).

Every function returns a float32 numpy array [H, W, 3] in [0, 1], the layout of one ComfyUI IMAGE.
Sizes are fixed by the inputs (see HeatLayout and CHART_SIZE), so callers and tests know them in advance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CHART_SIZE = (480, 800)          # (height, width) of the share and entropy charts
TILE = 256                       # long side of one heatmap tile, pixels
LABEL_W, TITLE_H, FRAME_H, GAP = 190, 46, 20, 6
MAX_FRAMES = 8                   # heatmap columns for a video: evenly spaced latent frames
BACKDROP_SIDE = 2 * TILE         # a decoded frame under a tile is cut down to this many pixels a side first

BACKGROUND = (250, 250, 250)
INK = (30, 30, 30)
GRID = (220, 220, 220)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
# A perceptually ordered dark-to-bright map (anchors of 'inferno').
_CMAP = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
                  (250, 193, 39), (252, 255, 164)], dtype=np.float32) / 255.0


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:        # Pillow < 10.1: only the fixed bitmap font
        return ImageFont.load_default()


def _canvas(height: int, width: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), BACKGROUND)
    return image, ImageDraw.Draw(image)


def _to_array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


def _fit(draw, text: str, width: int, font) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def colormap(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] -> RGB in [0, 1] (inferno-like), shape [..., 3]."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(_CMAP) - 1)
    low = np.floor(v).astype(int).clip(0, len(_CMAP) - 2)
    frac = (v - low)[..., None]
    return _CMAP[low] * (1 - frac) + _CMAP[low + 1] * frac


def _resize(array: np.ndarray, height: int, width: int, smooth: bool) -> np.ndarray:
    """[h, w] or [h, w, 3] float array resized with Pillow (bicubic, or nearest to show the cells)."""
    from PIL import Image

    resample = Image.BICUBIC if smooth else Image.NEAREST
    if array.ndim == 2:
        return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize((width, height), resample))
    channels = [np.asarray(Image.fromarray(array[..., c].astype(np.float32), mode="F").resize((width, height), resample))
                for c in range(array.shape[-1])]
    return np.stack(channels, axis=-1)


def shown_frames(frames: int, limit: int = MAX_FRAMES) -> list[int]:
    """Which frames get a column: all of them up to `limit`, else `limit` evenly spaced, first and last kept."""
    if frames <= limit:
        return list(range(frames))
    return sorted({round(i * (frames - 1) / (limit - 1)) for i in range(limit)})


@dataclass(frozen=True)
class HeatLayout:
    rows: int                 # one per pick
    columns: int              # one per shown frame
    tile_h: int
    tile_w: int
    video: bool

    @property
    def size(self) -> tuple:
        height = TITLE_H + (FRAME_H if self.video else 0) + self.rows * (self.tile_h + GAP) + GAP
        width = LABEL_W + self.columns * (self.tile_w + GAP) + GAP
        return height, width


def heat_layout(picks: int, frames: int, aspect_hw: float) -> HeatLayout:
    """aspect_hw: height / width of one frame (of the picture under the map, else of the token grid)."""
    if aspect_hw >= 1:
        tile_h, tile_w = TILE, max(32, round(TILE / aspect_hw))
    else:
        tile_h, tile_w = max(32, round(TILE * aspect_hw)), TILE
    return HeatLayout(max(1, picks), len(shown_frames(frames)), tile_h, tile_w, frames > 1)


def max_heat_size(picks: int, frames: int = MAX_FRAMES) -> tuple:
    """(height, width) bound of a heatmap picture of `picks` rows, whatever the frames' aspect: every tile
    fits in TILE x TILE and at most MAX_FRAMES columns are drawn."""
    height = TITLE_H + FRAME_H + picks * (TILE + GAP) + GAP
    width = LABEL_W + min(frames, MAX_FRAMES) * (TILE + GAP) + GAP
    return height, width


def heatmap_picture(maps: np.ndarray, labels: Sequence[str], notes: Sequence[str], title: str,
                    backdrop: np.ndarray | None = None, backdrop_frame=None, aspect_hw: float | None = None) -> np.ndarray:
    """maps [P, T, H, W]: attention per pick, cell and frame (NaN = not recorded); labels, notes: per pick;
    title: a headline, optionally a newline and a line of detail.
    Each pick's row is scaled to its own peak over all frames, so the frames of one token compare directly.
    backdrop [N, h, w, 3] in [0, 1] (decoded image or frames): drawn under the map; backdrop_frame(t) picks
    its frame for map frame t."""
    picks, frames, cells_h, cells_w = maps.shape
    if aspect_hw is None:
        aspect_hw = backdrop.shape[1] / backdrop.shape[2] if backdrop is not None else cells_h / cells_w
    layout = heat_layout(picks, frames, aspect_hw)
    height, width = layout.size
    image, draw = _canvas(height, width)
    font, small = _font(14), _font(12)
    headline, _, detail = title.partition("\n")
    draw.text((GAP, 6), _fit(draw, headline, width - 2 * GAP, font), fill=INK, font=font)
    draw.text((GAP, 26), _fit(draw, detail, width - 2 * GAP, small), fill=(90, 90, 90), font=small)
    columns = shown_frames(frames)
    top = TITLE_H
    if layout.video:
        for c, t in enumerate(columns):
            x = LABEL_W + GAP + c * (layout.tile_w + GAP)
            draw.text((x, top + 3), f"latent frame {t}", fill=INK, font=small)
        top += FRAME_H
    canvas = _to_array(image)
    for p in range(picks):
        y = top + GAP + p * (layout.tile_h + GAP)
        peak = np.nanmax(maps[p]) if np.isfinite(maps[p]).any() else 0.0
        for c, t in enumerate(columns):
            x = LABEL_W + GAP + c * (layout.tile_w + GAP)
            heat = maps[p, t] / peak if peak > 0 else np.zeros_like(maps[p, t])
            heat = np.nan_to_num(heat, nan=0.0)
            if backdrop is not None:
                under = backdrop[backdrop_frame(t) if backdrop_frame else 0]
                under = _resize(under, layout.tile_h, layout.tile_w, smooth=True)
                level = np.clip(_resize(heat, layout.tile_h, layout.tile_w, smooth=True), 0, 1)[..., None]  # bicubic
                alpha = 0.25 + 0.6 * level
                tile = (1 - alpha) * under + alpha * colormap(level[..., 0])
            else:
                tile = colormap(_resize(heat, layout.tile_h, layout.tile_w, smooth=False))
            canvas[y:y + layout.tile_h, x:x + layout.tile_w] = np.clip(tile, 0, 1)
    from PIL import Image, ImageDraw

    image = Image.fromarray((canvas * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for p in range(picks):
        y = top + GAP + p * (layout.tile_h + GAP)
        draw.text((GAP, y + 4), _fit(draw, labels[p], LABEL_W - 2 * GAP, font), fill=INK, font=font)
        for i, line in enumerate(str(notes[p]).split("\n")[:6]):
            draw.text((GAP, y + 26 + 16 * i), _fit(draw, line, LABEL_W - 2 * GAP, small), fill=(90, 90, 90), font=small)
    return _to_array(image)


def message_picture(text: str, size: tuple = CHART_SIZE) -> np.ndarray:
    """A picture that says why there is nothing to draw (never a blank output)."""
    image, draw = _canvas(*size)
    font = _font(16)
    y = 20
    for line in text.split("\n"):
        draw.text((20, y), _fit(draw, line, size[1] - 40, font), fill=INK, font=font)
        y += 24
    draw.rectangle((2, 2, size[1] - 3, size[0] - 3), outline=GRID, width=2)
    return _to_array(image)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = max(high - low, 1e-12)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _format(value: float, percent: bool) -> str:
    if percent:
        return f"{100 * value:.3g}%"
    return f"{value:.3g}"


def line_chart(x_labels: Sequence[str], series: Sequence[tuple], title: str, y_label: str, x_title: str,
               percent: bool = False, y_floor: float | None = None, subtitle: str = "",
               size: tuple = CHART_SIZE) -> np.ndarray:
    """series: (label, values [len(x_labels)] with NaN gaps, color or None, line width). A legend lists the
    labelled series; unlabelled ones are drawn without an entry (e.g. thin per-step lines)."""
    height, width = size
    image, draw = _canvas(height, width)
    font, small = _font(15), _font(12)
    left, right, top, bottom = 70, 190, 52, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.text((left, 8), _fit(draw, title, width - left - 10, font), fill=INK, font=font)
    if subtitle:
        draw.text((left, 28), _fit(draw, subtitle, width - left - 10, small), fill=(90, 90, 90), font=small)
    values = np.array([v for _, vals, *_ in series for v in vals], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return message_picture(f"{title}\nnothing recorded", size)
    low = float(values.min()) if y_floor is None else min(y_floor, float(values.min()))
    high = float(values.max())
    if high - low < 1e-9:
        low, high = low - 0.5 * max(abs(low), 1e-3), high + 0.5 * max(abs(high), 1e-3)
    pad = 0.06 * (high - low)
    low = low if y_floor is not None and low >= y_floor else low - pad
    high += pad

    def to_xy(i: int, v: float) -> tuple:
        n = len(x_labels)
        x = left + (plot_w * (i + 0.5) / n)
        y = top + plot_h * (1 - (v - low) / (high - low))
        return x, y

    for tick in _ticks(low, high):
        _, y = to_xy(0, tick)
        draw.line((left, y, left + plot_w, y), fill=GRID, width=1)
        text = _format(tick, percent)
        draw.text((left - 8 - draw.textlength(text, font=small), y - 7), text, fill=INK, font=small)
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline=INK, width=1)
    every = max(1, math.ceil(len(x_labels) / 16))
    for i, label in enumerate(x_labels):
        x, _ = to_xy(i, low)
        draw.line((x, top + plot_h, x, top + plot_h + 4), fill=INK)
        if i % every == 0:
            label = _fit(draw, label, 60, small)
            draw.text((x - draw.textlength(label, font=small) / 2, top + plot_h + 7), label, fill=INK, font=small)
    draw.text((left + plot_w / 2 - draw.textlength(x_title, font=small) / 2, height - 22), x_title, fill=INK, font=small)
    draw.text((6, top - 18), y_label, fill=INK, font=small)

    legend_y = top
    for n, (label, vals, color, line_width) in enumerate(series):
        color = tuple(color) if color is not None else PALETTE[n % len(PALETTE)]
        points = [to_xy(i, v) if np.isfinite(v) else None for i, v in enumerate(vals)]
        run = []
        for point in points + [None]:
            if point is None:
                if len(run) > 1:
                    draw.line(run, fill=color, width=line_width)
                run = []
            else:
                run.append(point)
        for point in points:
            if point is not None:
                r = 2 + line_width // 2
                draw.ellipse((point[0] - r, point[1] - r, point[0] + r, point[1] + r), fill=color)
        if label:
            draw.line((left + plot_w + 12, legend_y + 8, left + plot_w + 32, legend_y + 8), fill=color, width=max(2, line_width))
            draw.text((left + plot_w + 38, legend_y), _fit(draw, label, right - 44, small), fill=INK, font=small)
            legend_y += 18
    return _to_array(image)


def ramp(n: int, start=(198, 219, 239), end=(8, 48, 107)) -> list[tuple]:
    """n colors from light to dark (early steps light, late steps dark)."""
    if n <= 1:
        return [end]
    return [tuple(round(a + (b - a) * i / (n - 1)) for a, b in zip(start, end)) for i in range(n)]
