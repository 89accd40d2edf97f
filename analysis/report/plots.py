"""Matplotlib figures of the report. Plain data in, a Figure out; no SQL here.

Sized for a survey of hundreds of models: long category lists are cut to the top entries by the
caller, labels are shortened, and every bar says how many neurons it rests on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

ACCENT = "#c2410c"
BASE = "#3b6ea8"
MUTED = "#9aa5b1"
SIGN_COLORS = {"excited": "#c2410c", "inhibited": "#2563eb", "mixed": "#8b5cf6", "(unknown)": MUTED}
FAMILY_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]

plt.rcParams.update(
    {
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.25,
        "axes.axisbelow": True,
        "figure.dpi": 110,
    }
)


def short(text: str, width: int = 38) -> str:
    """``text`` cut to ``width`` in the middle, so both the architecture and the tag stay readable."""
    if len(text) <= width:
        return text
    head = (width - 1) * 3 // 5
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def pan_share_bars(
    labels: Sequence[str], values: Sequence[float | None], *, title: str, xlabel: str, highlight: int = 0
):
    """Horizontal bars, largest first; the first ``highlight`` bars in the accent colour; a None value is a gap."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(8.5, max(1.6, 0.22 * n + 0.9)))
    y = np.arange(n)
    colors = [ACCENT if i < highlight else BASE for i in range(n)]
    ax.barh(y, [0 if v is None else v for v in values], color=colors, height=0.72)
    ax.set_yticks(y, [short(lbl, 44) for lbl in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    ax.grid(axis="y", visible=False)
    top = max([v for v in values if v is not None and not math.isnan(v)] or [1.0]) or 1.0
    for yi, v in zip(y, values, strict=True):
        if v is not None:
            ax.text(v + top * 0.01, yi, f"{v:.2f}", va="center", fontsize=7, color="#333")
    ax.set_xlim(0, top * 1.12)
    return fig


def share_histogram(values: Sequence[float], *, title: str, xlabel: str):
    fig, ax = plt.subplots(figsize=(8.5, 2.8))
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)])
    bins = min(60, max(10, int(math.sqrt(len(data)) * 2)))
    ax.hist(data, bins=bins, color=BASE, alpha=0.9)
    if len(data):
        med = float(np.median(data))
        ax.axvline(med, color=ACCENT, lw=1.5)
        ax.text(
            med,
            ax.get_ylim()[1] * 0.97,
            f" median {med:.2f} ",
            color=ACCENT,
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("models")
    ax.set_title(title, loc="left")
    return fig


def family_strips(families: Sequence[str], groups: Sequence[Sequence[float]], *, title: str, xlabel: str):
    """One row per family: each model a dot, the median a bar; families in the given order."""
    n = len(families)
    fig, ax = plt.subplots(figsize=(8.5, max(1.8, 0.28 * n + 1.0)))
    rng = np.random.default_rng(0)
    for i, values in enumerate(groups):
        vals = np.asarray([v for v in values if v is not None and not math.isnan(v)])
        if not len(vals):
            continue
        jitter = rng.uniform(-0.22, 0.22, len(vals)) if len(vals) > 1 else np.zeros(1)
        ax.scatter(vals, i + jitter, s=10, color=BASE, alpha=0.55, linewidths=0)
        ax.plot([np.median(vals)] * 2, [i - 0.34, i + 0.34], color=ACCENT, lw=2.2)
    ax.set_yticks(range(n), [short(f, 30) for f in families], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    ax.grid(axis="y", visible=False)
    return fig


def depth_profile(bins: Sequence[str], pooled: Sequence[float], lines: dict[str, Sequence[float | None]]):
    """PAN % by relative depth decile: pooled bars, and one line per large family."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=False)
    x = np.arange(len(bins))
    axes[0].bar(x, pooled, color=BASE)
    axes[0].set_xticks(x, bins, rotation=45, ha="right", fontsize=7)
    axes[0].set_ylabel("PANs, % of padded neurons")
    axes[0].set_title("All models (pooled)", loc="left")
    for i, (name, values) in enumerate(lines.items()):
        ys = [np.nan if v is None else v for v in values]
        axes[1].plot(
            x, ys, marker="o", ms=3, lw=1.4, color=FAMILY_COLORS[i % len(FAMILY_COLORS)], label=short(name, 22)
        )
    axes[1].set_xticks(x, bins, rotation=45, ha="right", fontsize=7)
    axes[1].set_title("Largest families", loc="left")
    if lines:
        axes[1].legend(fontsize=7, frameon=False, ncol=2)
    for ax in axes:
        ax.set_xlabel("relative depth of the layer")
    fig.tight_layout()
    return fig


def type_composition(
    types: Sequence[str],
    by_sign: dict[str, Sequence[int]],
    sides: Sequence[str],
    side_by_sign: dict[str, Sequence[int]],
):
    """Stacked bars of PAN type by sign, and of the sides PANs respond to."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.9), gridspec_kw={"width_ratios": [1.4, 1]})
    for ax, cats, data in ((axes[0], types, by_sign), (axes[1], sides, side_by_sign)):
        left = np.zeros(len(cats))
        y = np.arange(len(cats))
        for sign, counts in data.items():
            counts = np.asarray(counts, dtype=float)
            ax.barh(y, counts, left=left, color=SIGN_COLORS.get(sign, MUTED), label=sign, height=0.7)
            left += counts
        ax.set_yticks(y, list(cats), fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("PANs")
    axes[0].set_title("PAN type", loc="left")
    axes[1].set_title("Sides (a PAN counts once per side)", loc="left")
    axes[0].legend(fontsize=7, frameon=False, loc="lower right")
    fig.tight_layout()
    return fig


def category_panels(panels: list[tuple[str, Sequence[str], Sequence[float], Sequence[int]]]):
    """Small bar charts side by side: (title, categories, PAN %, neurons) each."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 0.4, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (title, cats, pct, neurons) in zip(axes.flat, panels, strict=False):
        x = np.arange(len(cats))
        ax.bar(x, [0 if v is None else v for v in pct], color=BASE, width=0.7)
        ax.set_xticks(x, [short(c, 16) for c in cats], rotation=40, ha="right", fontsize=7)
        ax.set_title(title, loc="left")
        top = max([v for v in pct if v is not None] or [1.0]) or 1.0
        for xi, v, count in zip(x, pct, neurons, strict=True):
            ax.text(xi, (v or 0) + top * 0.02, _count(count), ha="center", va="bottom", fontsize=6, color="#555")
        ax.set_ylim(0, top * 1.2)
    for row in axes:
        row[0].set_ylabel("PANs, % of neurons")
    fig.tight_layout()
    return fig


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def share_scatter(panels: list[tuple[str, Sequence[float], Sequence[float], Sequence[str], bool]], families: list[str]):
    """PAN % against model attributes: (xlabel, x, y, family per point, log x) per panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), squeeze=False)
    color_of = {f: FAMILY_COLORS[i % len(FAMILY_COLORS)] for i, f in enumerate(families)}
    for ax, (xlabel, xs, ys, fams, logx) in zip(axes[0], panels, strict=True):
        colors = [color_of.get(f, MUTED) for f in fams]
        ax.scatter(xs, ys, c=colors, s=14, alpha=0.75, linewidths=0)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("PANs, % of padded neurons")
    handles = [plt.Line2D([], [], marker="o", ls="", color=color_of[f], label=short(f, 20)) for f in families]
    handles.append(plt.Line2D([], [], marker="o", ls="", color=MUTED, label="other"))
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(9, len(handles)),
        fontsize=7,
        frameon=False,
        bbox_to_anchor=(0.5, 1.06),
    )
    fig.tight_layout()
    return fig


def kernel_grid(items: list[dict], cols: int = 6):
    """Each PAN's kernel (summed over input channels) as a diverging heat map, padded weight mass around it.

    ``items``: dicts with kernel (kh x kw array), kmass (top, bottom, left, right), title.
    """
    rows = max(1, math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items, strict=False):
        kernel = item["kernel"]
        vmax = float(np.nanmax(np.abs(kernel))) or 1.0
        ax.imshow(kernel, cmap="RdBu_r", norm=TwoSlopeNorm(0, -vmax, vmax), interpolation="nearest")
        ax.set_title(item["title"], fontsize=7, pad=10)
        top, bottom, left, right = item["kmass"]
        kh, kw = kernel.shape
        style = {"fontsize": 6, "color": "#333", "ha": "center", "va": "center"}
        ax.text((kw - 1) / 2, -0.5 - 0.2 * kh, _mass(top), **style)
        ax.text((kw - 1) / 2, kh - 0.5 + 0.2 * kh, _mass(bottom), **style)
        ax.text(-0.5 - 0.2 * kw, (kh - 1) / 2, _mass(left), rotation=90, **style)
        ax.text(kw - 0.5 + 0.2 * kw, (kh - 1) / 2, _mass(right), rotation=90, **style)
        ax.set_xlim(-0.5 - 0.42 * kw, kw - 0.5 + 0.42 * kw)
        ax.set_ylim(kh - 0.5 + 0.42 * kh, -0.5 - 0.42 * kh)
    fig.tight_layout(h_pad=1.4, w_pad=0.3)
    return fig


def _mass(value: float | None) -> str:
    return "·" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.2f}"


def border_images(items: list[dict], cols: int = 8):
    """Mean border response as 3x3 images (centre: interior = 0; edges: sides; corners: mean of the two).

    ``items``: dicts with own (top, bottom, left, right), obs (same), title. Two rows per item
    group: own response on top, observed contrast below; one shared, symmetric colour scale.
    """
    n = len(items)
    cols = min(cols, max(1, n))
    blocks = max(1, math.ceil(n / cols))
    # Per block: an own-z row, an observed-z row, and a thin spacer row that keeps the next block's titles clear.
    fig, cells = plt.subplots(
        3 * blocks,
        cols,
        figsize=(1.45 * cols + 1.0, 3.5 * blocks),
        squeeze=False,
        gridspec_kw={"height_ratios": [1, 1, 0.32] * blocks},
    )
    for ax in cells.flat:
        ax.axis("off")
    axes = np.concatenate([cells[3 * b : 3 * b + 2] for b in range(blocks)])
    images = [(_grid3(it["own"]), _grid3(it["obs"])) for it in items]
    # One colour scale for all panels, so they compare; saturated at the median panel's peak, so one
    # very strong group does not wash out the rest (the numbers in the cells stay exact).
    peaks = [float(np.nanmax(np.abs(g))) for pair in images for g in pair if np.isfinite(g).any()]
    vmax = float(np.median(peaks)) if peaks else 1.0
    vmax = vmax if vmax > 0 else 1.0
    norm = TwoSlopeNorm(0, -vmax, vmax)
    mappable = None
    for i, (item, (own, obs)) in enumerate(zip(items, images, strict=True)):
        b, c = divmod(i, cols)
        for r, (grid, label) in enumerate(((own, "own z"), (obs, "observed z"))):
            ax = axes[2 * b + r][c]
            ax.axis("on")
            mappable = ax.imshow(np.nan_to_num(grid), cmap="RdBu_r", norm=norm, interpolation="nearest")
            for yy, xx in ((0, 1), (2, 1), (1, 0), (1, 2)):  # the four sides, as numbers
                value = grid[yy, xx]
                if np.isfinite(value):
                    dark = abs(value) > 0.6 * vmax
                    ax.text(
                        xx, yy, f"{value:.1f}", ha="center", va="center", fontsize=6, color="white" if dark else "#333"
                    )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("#ccc")
            if r == 0:
                ax.set_title(item["title"], fontsize=6.5)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    if mappable is not None:
        cbar = fig.colorbar(mappable, ax=cells.ravel().tolist(), fraction=0.025, pad=0.02, extend="both")
        cbar.set_label("mean z (border minus reference, in interior std)", fontsize=7)
        cbar.ax.tick_params(labelsize=7)
    return fig


def _grid3(sides: Sequence[float | None]) -> np.ndarray:
    top, bottom, left, right = (np.nan if v is None else float(v) for v in sides)

    def corner(a: float, b: float) -> float:
        vals = [v for v in (a, b) if not math.isnan(v)]
        return float(np.mean(vals)) if vals else np.nan

    return np.array(
        [
            [corner(top, left), top, corner(top, right)],
            [left, 0.0, right],
            [corner(bottom, left), bottom, corner(bottom, right)],
        ]
    )
