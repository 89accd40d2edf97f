"""The report's sections, in order (SECTIONS). Each reads named queries and draws with plots.py.

Every section reads one configuration (``ctx.config``): a folder holding several detection
configurations would otherwise mix, say, two probes in one bar. The report says which one it shows.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.connection import sql_literal
from analysis.report import plots
from analysis.report.core import ReportContext, Section, SectionFn, empty, esc, figure_html, table_html
from analysis.report.impact import impact_section

TYPE_ORDER = ("single side", "corner pair", "opposite pair", "three sides", "all four")
SIDE_ORDER = ("top", "bottom", "left", "right")
SIGNS = ("excited", "inhibited", "mixed")
SIGN_CODE = {"excited": "exc", "inhibited": "inh", "mixed": "mix"}


def model_label(model_id: str) -> str:
    """A short name for small panels: no source prefix, no folder (``local-dir:/a/b/net`` -> ``net``)."""
    return model_id.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1]


def side_code(sides: str | None) -> str:
    """'top+left' -> 'T+L': short labels for small panels."""
    if not sides:
        return "?"
    parts = ["top", "bottom", "left", "right"] if sides == "all" else sides.split("+")
    return "+".join(p[:1].upper() for p in parts)


def _named(ctx: ReportContext, name: str, then: str = "") -> pa.Table:
    """The rows of named query ``name`` for the configuration shown (``then``: ORDER BY / LIMIT ...)."""
    return ctx.table(f"SELECT * FROM {name} WHERE config_id = {sql_literal(ctx.config)} {then}".rstrip())


def _col(table: pa.Table, name: str) -> list:
    return table[name].to_pylist()


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


# --- sections ---------------------------------------------------------------------------------


def overview_section(ctx: ReportContext) -> Section:
    ov = _named(ctx, "overview").to_pylist()
    row = ov[0] if ov else {}
    settings = (_named(ctx, "detection_settings").to_pylist() or [{}])[0]
    tau = ctx.tau if ctx.tau is not None else settings.get("tau")
    cards = [
        ("models", _num(row.get("models"))),
        ("families", _num(row.get("families"))),
        ("padded neurons", _num(row.get("padded_neurons"))),
        ("PANs", _num(row.get("pans"))),
        ("PANs, % of padded", _num(row.get("pan_pct_padded"), "{:.2f}%")),
        ("median model, %", _num(row.get("median_model_pan_pct"), "{:.2f}%")),
        ("PANs, % of all conv", _num(row.get("pan_pct_conv"), "{:.2f}%")),
        ("failed models", _num(row.get("failures"))),
    ]
    card_html = "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>' for k, v in cards
    )
    probe = settings.get("probe")
    size = f"{settings.get('image_h')}x{settings.get('image_w')}" if settings.get("image_h") else "?"
    classification = (
        f"re-classified at tau {ctx.tau} from the stored own_z" if ctx.tau is not None else f"tau {_num(tau, '{:g}')}"
    )
    method = (
        f"<p>Configuration <code>{esc(ctx.config)}</code>: probe <b>{esc(probe)}</b> "
        f"({esc(settings.get('num_images'))} images, {esc(size)}), reference padding "
        f"<b>{esc(settings.get('reference'))}</b>, {esc(classification)}, detector "
        f"{esc(settings.get('detector_version'))}. A PAN is a neuron (conv output channel) of a layer with "
        "constant (zero or constant-value) padding that is not dead and whose own padding response reaches "
        "tau on some side: max over sides of |own_z| &ge; tau (detector 1.2 on; reflect, replicate and "
        "circular layers are measured but hold no PANs). "
        "&ldquo;Padded neurons&rdquo; are the measured neurons of convolutions that read padding.</p>"
    )
    others = ""
    if len(ctx.configs) > 1:
        rest = ", ".join(f"<code>{esc(c)}</code>" for c in ctx.configs if c != ctx.config)
        others = f'<p class="note">This folder also holds configuration(s) {rest}; choose with --config.</p>'
    return Section("overview", "Overview", f'<div class="cards">{card_html}</div>{method}{others}')


def per_model_section(ctx: ReportContext) -> Section:
    t = _named(ctx, "pans_per_model").filter(pc.field("pan_pct_padded").is_valid())
    if t.num_rows == 0:
        return Section("models", "PAN share per model", empty("No finished models with padded neurons."))
    ids, pcts = _col(t, "model_id"), _col(t, "pan_pct_padded")
    parts = []
    if t.num_rows > ctx.top_k:
        parts.append(
            figure_html(
                plots.share_histogram(
                    pcts, title=f"PAN share of all {t.num_rows} models", xlabel="PANs, % of padded neurons"
                ),
                alt="histogram of per-model PAN share",
                caption="Distribution over models of the share of padded neurons that are PANs; "
                "the line is the median.",
            )
        )
        k = ctx.top_k // 2
        labels = [*ids[:k], f"… {t.num_rows - 2 * k} more …", *ids[-k:]]
        values = [*pcts[:k], None, *pcts[-k:]]
        title = f"The {k} models with the highest and the {k} with the lowest PAN share (of {t.num_rows})"
        parts.append(
            figure_html(
                plots.pan_share_bars(labels, values, title=title, xlabel="PANs, % of padded neurons", highlight=k),
                alt="per-model PAN share, top and bottom",
                caption="Highest in orange, lowest in blue. All models: "
                f"<code>pans query {esc(ctx.directory)} @pans_per_model</code>.",
            )
        )
    else:
        parts.append(
            figure_html(
                plots.pan_share_bars(ids, pcts, title="PAN share per model", xlabel="PANs, % of padded neurons"),
                alt="per-model PAN share",
                caption="Share of each model's padded neurons that are PANs.",
            )
        )
    cols = [
        "model_id",
        "family",
        "pans",
        "padded_neurons",
        "pan_pct_padded",
        "pan_pct_conv",
        "dead",
        "num_params",
        "top1",
    ]
    parts.append(
        f"<details><summary>Table: models by PAN share (first {ctx.top_k * 2})</summary>"
        f"{table_html(t.select(cols), max_rows=ctx.top_k * 2)}</details>"
    )
    return Section("models", "PAN share per model", "\n".join(parts))


def null_section(ctx: ReportContext) -> Section:
    """PANs next to the null twin of each model (pipeline/null_twin.py) and the gap across models."""
    t = _named(ctx, "pans_vs_null")
    with_null = t.filter(pc.field("null_pans").is_valid())
    if with_null.num_rows == 0:
        note = (
            "No null twins in this configuration (measured with --no-null, only --random-init models, which are "
            "their own null, or a folder older than the null twin). Without one a PAN count cannot be told "
            "apart from what the architecture does to any weights (docs/calibration.md)."
        )
        return Section("null", "PANs against the null", empty(note))
    gap = _named(ctx, "null_gap").to_pylist()[0]
    summary = (
        f"<p>{gap['models_with_null']} of {gap['models']} models have a null twin: the same architecture freshly "
        "initialised, its normalisation recalibrated on the same probe, measured with the same settings. "
        f"In all: {_num(gap['pans'])} PANs against {_num(gap['null_pans'])} in the twins; median ratio "
        f"{_num(gap['median_ratio'], '{:.1f}')}x max(null, 1); {gap['models_10x_null']} models at 10x or more, "
        f"{gap['models_at_or_below_null']} at or below their null; median gap "
        f"{_num(gap['median_gap_pct_points'], '{:.2f}')} percentage points of padded neurons.</p>"
    )
    ids = _col(with_null, "model_id")[: ctx.top_k * 2]
    pans = [float(v or 0) for v in _col(with_null, "pan_pct_padded")[: ctx.top_k * 2]]
    nulls = [float(v or 0) for v in _col(with_null, "null_pct_padded")[: ctx.top_k * 2]]
    fig = figure_html(
        plots.pan_share_bars(
            [*ids, *(f"{model_label(i)} (null)" for i in ids)],
            [*pans, *nulls],
            title="PAN share, model and its null twin",
            xlabel="PANs, % of padded neurons",
            highlight=len(ids),
        ),
        alt="PAN share of each model and of its null twin",
        caption="Orange: the model; blue: its null twin. All models: "
        f"<code>pans query {esc(ctx.directory)} @pans_vs_null</code>.",
    )
    cols = ["model_id", "pans", "null_pans", "ratio_to_null", "pan_pct_padded", "null_pct_padded", "gap_pct_points"]
    table = (
        f"<details><summary>Table: models against their null (first {ctx.top_k * 2})</summary>"
        f"{table_html(t.select(cols), max_rows=ctx.top_k * 2)}</details>"
    )
    return Section("null", "PANs against the null", summary + fig + table)


def family_section(ctx: ReportContext) -> Section:
    per = _named(ctx, "pans_per_model")
    fam = _named(ctx, "pans_by_family")
    if fam.num_rows == 0:
        return Section("families", "By architecture family", empty("No models."))
    groups: dict[str, list[float]] = {}
    for f, v in zip(_col(per, "family"), _col(per, "pan_pct_padded"), strict=True):
        if v is not None:
            groups.setdefault(f, []).append(v)
    limit = 40
    by_size = sorted(groups, key=lambda f: (-len(groups[f]), f))
    shown, rest = by_size[:limit], by_size[limit:]
    if rest:
        groups[f"other ({len(rest)} families)"] = [v for f in rest for v in groups[f]]
        shown.append(f"other ({len(rest)} families)")
    shown.sort(key=lambda f: -float(np.median(groups[f])))
    labels = [f"{f} ({len(groups[f])})" for f in shown]
    parts = [
        figure_html(
            plots.family_strips(
                labels,
                [groups[f] for f in shown],
                title="PAN share per model, by family",
                xlabel="PANs, % of padded neurons",
            ),
            alt="PAN share by family",
            caption="Each dot is a model, the orange bar the family median; number of models in brackets. "
            "Families come from the architecture name (docs/analysis.md: the family rule).",
        )
    ]
    parts.append(f"<details><summary>Table: pans_by_family</summary>{table_html(fam, max_rows=60)}</details>")
    return Section("families", "By architecture family", "\n".join(parts))


def depth_section(ctx: ReportContext) -> Section:
    depth = _named(ctx, "pans_by_depth")
    if depth.num_rows == 0:
        return Section("depth", "By depth", empty("No layers."))
    bins = [b for b in _col(depth, "depth") if b != "(unknown)"]
    pooled = dict(zip(_col(depth, "depth"), _col(depth, "pan_pct"), strict=True))
    top = _col(_named(ctx, "family_models", "ORDER BY models DESC, family LIMIT 6"), "family")
    lines: dict[str, list] = {}
    if top:
        per_fam = _named(ctx, "pans_by_family_depth").to_pylist()
        lookup = {(r["family"], r["depth"]): r["pan_pct"] for r in per_fam}
        lines = {f"{f}": [lookup.get((f, b)) for b in bins] for f in top}
    fig = plots.depth_profile(bins, [pooled[b] or 0.0 for b in bins], lines)
    parts = [
        figure_html(
            fig,
            alt="PAN share by relative depth",
            caption="Relative depth = layer index / (conv layers - 1), in deciles. Left: all models "
            "pooled; right: the six families with the most models.",
        )
    ]
    parts.append(f"<details><summary>Table: pans_by_depth</summary>{table_html(depth)}</details>")
    return Section("depth", "By depth", "\n".join(parts))


def types_section(ctx: ReportContext) -> Section:
    types = _named(ctx, "pan_types").to_pylist()
    sides = _named(ctx, "pans_by_side").to_pylist()
    if not types:
        return Section("types", "PAN types and signs", empty("No PANs."))
    present = [t for t in TYPE_ORDER if any(r["pan_type"] == t for r in types)]
    signs = [s for s in SIGNS if any(r["pan_sign"] == s for r in types)]
    by_sign = {
        s: [sum(r["pans"] for r in types if r["pan_type"] == t and r["pan_sign"] == s) for t in present] for s in signs
    }
    side_rows = {r["side"]: r for r in sides}
    side_cats = [s for s in SIDE_ORDER if s in side_rows]
    side_by_sign = {s: [side_rows[c][s] for c in side_cats] for s in SIGNS}
    fig = plots.type_composition(present, by_sign, side_cats, side_by_sign)
    parts = [
        figure_html(
            fig,
            alt="PAN types and sides by sign",
            caption="Type: the set of sides whose |own_z| reaches tau (corner pair: two adjacent "
            "sides; opposite pair: top+bottom or left+right). Excited: the border raises the "
            "output on every PAN side; inhibited: lowers it; mixed: both.",
        )
    ]
    parts.append(
        f"<details><summary>Table: pan_side_sets</summary>{table_html(_named(ctx, 'pan_side_sets'))}</details>"
    )
    return Section("types", "PAN types and signs", "\n".join(parts))


def layer_kind_section(ctx: ReportContext) -> Section:
    panels = []
    specs = (
        ("Kernel", "pans_by_kernel", "kernel"),
        ("Stride", "pans_by_stride", "stride"),
        ("Dilation", "pans_by_dilation", "dilation"),
        ("Conv type", "pans_by_conv_type", "conv_type"),
    )
    for title, name, key in specs:
        t = _named(ctx, name)
        if t.num_rows:
            n = min(8, t.num_rows)  # ordered by neurons: the common kinds
            panels.append((title, _col(t, key)[:n], _col(t, "pan_pct")[:n], _col(t, "neurons")[:n]))
    pad = _named(ctx, "pans_by_padding")
    if pad.num_rows:
        n = min(8, pad.num_rows)
        cats = [f"{k}/{m}" for k, m in zip(_col(pad, "padding_kind")[:n], _col(pad, "padding_mode")[:n], strict=True)]
        panels.append(("Padding kind/mode", cats, _col(pad, "pan_pct")[:n], _col(pad, "neurons")[:n]))
    if not panels:
        return Section("layers", "By layer kind", empty("No layers."))
    parts = [
        figure_html(
            plots.category_panels(panels),
            alt="PAN share by kernel, stride, dilation, conv and padding kind",
            caption="PANs as % of the neurons of such layers; the number over a bar is how many "
            "neurons it rests on. Up to 8 most common values each.",
        )
    ]
    tables = "".join(
        f"<h4>{name}</h4>{table_html(_named(ctx, name))}"
        for name in ("pans_by_kernel", "pans_by_stride", "pans_by_dilation", "pans_by_padding", "pans_by_conv_type")
    )
    parts.append(f"<details><summary>Tables</summary>{tables}</details>")
    return Section("layers", "By layer kind", "\n".join(parts))


def size_section(ctx: ReportContext) -> Section:
    per = _named(ctx, "pans_per_model").to_pylist()
    fams = [r["family"] for r in _named(ctx, "pans_by_family").sort_by([("models", "descending")]).to_pylist()][:8]
    panels = []
    with_size = [r for r in per if r["num_params"] and r["pan_pct_padded"] is not None]
    with_acc = [r for r in per if r["top1"] is not None and r["pan_pct_padded"] is not None]
    if with_size:
        panels.append(
            (
                "parameters",
                [r["num_params"] for r in with_size],
                [r["pan_pct_padded"] for r in with_size],
                [r["family"] for r in with_size],
                True,
            )
        )
    if with_acc:
        panels.append(
            (
                "ImageNet top-1",
                [r["top1"] for r in with_acc],
                [r["pan_pct_padded"] for r in with_acc],
                [r["family"] for r in with_acc],
                False,
            )
        )
    corr = _named(ctx, "pan_share_correlations")
    if not panels:
        return Section("size", "Against model size and accuracy", empty("No model has num_params or top1."))
    parts = [
        figure_html(
            plots.share_scatter(panels, fams),
            alt="PAN share against size and accuracy",
            caption="Each dot a model, coloured by family (the eight with the most models). "
            f"Models with size: {len(with_size)}; with top-1: {len(with_acc)}.",
        )
    ]
    parts.append(table_html(corr))
    parts.append(
        f"<details><summary>Tables: pans_vs_size, pans_vs_accuracy</summary>"
        f"{table_html(_named(ctx, 'pans_vs_size'))}{table_html(_named(ctx, 'pans_vs_accuracy'))}</details>"
    )
    return Section("size", "Against model size and accuracy", "\n".join(parts))


def kernels_section(ctx: ReportContext, count: int = 24) -> Section:
    models = max(1, len(set(_col(_named(ctx, "pans_per_model"), "model_id"))))
    per_model = max(2, math.ceil(count / models))
    rows = _named(
        ctx, "strongest_pans",
        f"AND model_rank <= {per_model} ORDER BY strength DESC, model_id, layer_index, channel LIMIT {count}",
    ).to_pylist()
    items = []
    for r in rows:
        kernel, kh, kw = r["kernel"], r["kernel_h"], r["kernel_w"]
        if not kernel or not kh or not kw or len(kernel) != kh * kw:
            continue
        name = model_label(r["model_id"])
        title = (
            f"{plots.short(name, 26)}\n{plots.short(r['layer'], 18)} #{r['channel']}\n"
            f"{side_code(r['pan_sides'])} {SIGN_CODE.get(r['pan_sign'], '')} |z| {r['strength']:.1f}"
        )
        items.append(
            {
                "kernel": np.asarray(kernel, dtype=float).reshape(kh, kw),
                "kmass": (r["kmass_top"], r["kmass_bottom"], r["kmass_left"], r["kmass_right"]),
                "title": title,
            }
        )
    if not items:
        return Section("kernels", "Kernels of the strongest PANs", empty("No PAN with a stored kernel."))
    fig = plots.kernel_grid(items)
    caption = (
        f"The {len(items)} strongest PANs (largest |own_z|; at most {per_model} per model); sides T/B/L/R, "
        "exc(ited) or inh(ibited). Each kernel is summed over "
        "input channels (red positive, blue negative, own colour scale per kernel); the numbers around it are "
        "the padded weight mass per side (kmass_top/bottom/left/right)."
    )
    return Section(
        "kernels",
        "Kernels of the strongest PANs",
        figure_html(fig, alt="kernels of the strongest PANs", caption=caption),
    )


def border_section(ctx: ReportContext, groups: int = 12) -> Section:
    rows = _named(ctx, "pan_border_profiles", f"ORDER BY pans DESC, pan_sides, pan_sign LIMIT {groups}").to_pylist()
    per_group = 200  # PANs averaged per group at most (report.sql, pan_border_profiles)
    if not rows:
        return Section("border", "Average border response of the top PANs", empty("No PANs."))
    items = [
        {
            "own": (r["own_top"], r["own_bottom"], r["own_left"], r["own_right"]),
            "obs": (r["obs_top"], r["obs_bottom"], r["obs_left"], r["obs_right"]),
            "title": f"{r['pan_sides']}\n{r['pan_sign'] or ''}, {r['pans']:,} PANs",
        }
        for r in rows
    ]
    fig = plots.border_images(items, cols=6)
    caption = (
        f"For the {len(items)} most common PAN side sets and signs, the mean z-scores of their strongest "
        f"PANs (up to {per_group} each), drawn as the border of a 3x3 image: edges are the sides, corners the "
        "mean of their two sides, the centre the interior (0 by definition). Top row: own padding response "
        "(own_z); bottom row: observed border contrast (obs_z), which includes what earlier layers pass on."
    )
    return Section(
        "border",
        "Average border response of the top PANs",
        figure_html(fig, alt="border response images", caption=caption),
    )


def numbers_section(ctx: ReportContext) -> Section:
    parts = [
        "<h4>Own versus inherited border response (border_response)</h4>",
        "<p>Own: PANs (this layer's padding moves the output). Inherited: border-informed neurons, whose output "
        "differs at the border (obs_z) although their own padding does not (own_z below tau).</p>",
        table_html(_named(ctx, "border_response"), max_rows=ctx.top_k),
        "<h4>Dead neurons (dead_neurons)</h4>",
        "<p>Interior output nearly constant: z-scores are meaningless, so they are never PANs.</p>",
        table_html(_named(ctx, "dead_neurons"), max_rows=ctx.top_k),
    ]
    return Section("numbers", "Own versus inherited response; dead neurons", "\n".join(parts))


def failures_section(ctx: ReportContext) -> Section:
    summary = _named(ctx, "failures_summary")
    if summary.num_rows == 0:
        return Section("failures", "Failures", '<p class="good">No failed models.</p>')
    listing = _named(ctx, "failed_models")
    parts = [
        table_html(summary),
        f"<details open><summary>All failed models ({listing.num_rows})</summary>"
        f"{table_html(listing, max_rows=500)}</details>",
    ]
    return Section("failures", "Failures", "\n".join(parts))


#: The report, top to bottom. Add a section: write ``fn(ctx) -> Section | None`` and list it here.
SECTIONS: list[SectionFn] = [
    overview_section,
    per_model_section,
    null_section,
    family_section,
    depth_section,
    types_section,
    layer_kind_section,
    size_section,
    kernels_section,
    border_section,
    numbers_section,
    impact_section,  # analysis/report/impact.py: each registered impact experiment adds its panel
    failures_section,
]
