"""The impact section of the HTML report: tables and plots (matplotlib Agg, embedded as base64 PNG).

``impact_section(source)`` takes a results folder or an open DuckDB connection whose views
``impact``, ``impact_classes`` and ``impact_border`` exist, and returns an HTML fragment
(an empty string when there are no impact rows), so ``pans report`` can include it as is.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

_TABLES = ("impact", "impact_classes", "impact_border")


def _rows(con: Any, table: str, sql: str) -> list[dict[str, Any]]:
    try:
        cur = con.execute(sql.replace("{t}", table))
    except Exception:  # a view that does not exist (no such results yet) is simply empty
        return []
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _connect(source: Any) -> Any:
    import duckdb

    if not isinstance(source, (str, Path)):
        return source
    root = Path(source).expanduser()
    con = duckdb.connect()
    for table in _TABLES:
        if any((root / table).glob("*.parquet")):
            glob = str(root / table / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}', union_by_name=true)")
    return con


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table class='impact'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def impact_section(source: str | Path | Any) -> str:
    """HTML for the impact experiments of every model in ``source`` (folder or DuckDB connection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    con = _connect(source)
    summary = _rows(con, "impact", """
        SELECT model_id,
          max(value) FILTER (WHERE condition='intact' AND metric='pans') AS pans,
          max(value) FILTER (WHERE condition='intact' AND metric='images') AS images,
          max(value) FILTER (WHERE condition='intact' AND metric='accuracy') AS accuracy,
          max(value) FILTER (WHERE condition='pan_ablation' AND metric='top1_agreement') AS pan_agreement,
          max(value) FILTER (WHERE condition='pan_ablation' AND metric='kl') AS pan_kl,
          max(value) FILTER (WHERE condition='pan_ablation' AND metric='accuracy') AS pan_accuracy,
          max(value) FILTER (WHERE condition='pan_vs_control' AND metric='kl_control_mean') AS control_kl_mean,
          max(value) FILTER (WHERE condition='pan_vs_control' AND metric='kl_control_std') AS control_kl_std,
          max(value) FILTER (WHERE condition='pan_vs_control' AND metric='kl_z') AS kl_z,
          max(value) FILTER (WHERE condition='pan_vs_control' AND metric='kl_percentile') AS kl_percentile,
          max(value) FILTER (WHERE condition='reflect' AND metric='top1_agreement') AS reflect_agreement,
          max(value) FILTER (WHERE condition='replicate' AND metric='top1_agreement') AS replicate_agreement,
          max(value) FILTER (WHERE condition='circular' AND metric='top1_agreement') AS circular_agreement
        FROM {t} GROUP BY model_id ORDER BY model_id""")
    if not summary:
        return ""
    parts = ["<section id='impact'><h2>Impact: what PANs do to predictions</h2>",
             "<p>PAN ablation clamps every PAN to its mean activation on the probe; controls clamp as many random "
             "non-PAN neurons of the same layers (several seeds). <i>z</i> and percentile place the PAN result in "
             "the control distribution (positive z, percentile near 100: PANs matter more than random neurons). "
             "Padding rows run the same weights with another padding mode. See docs/impact.md.</p>"]
    cols = [c for c in summary[0] if any(r[c] is not None for r in summary)]
    parts.append(_table(summary, cols))

    controls = _rows(con, "impact", "SELECT model_id, value FROM {t} WHERE condition='random_control' AND metric='kl'")
    if controls:
        models = [r["model_id"] for r in summary]
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(models)), 3))
        for i, m in enumerate(models):
            vals = [r["value"] for r in controls if r["model_id"] == m]
            ax.scatter([i] * len(vals), vals, color="grey", s=14, label="random controls" if i == 0 else None)
            pan = summary[i]["pan_kl"]
            if pan is not None:
                ax.scatter([i], [pan], color="crimson", marker="D", s=30, label="PAN ablation" if i == 0 else None)
        ax.set_xticks(range(len(models)), [m.split(":")[-1][-24:] for m in models], rotation=30, ha="right")
        ax.set_ylabel("mean KL to intact (nats)")
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.legend(fontsize=8)
        parts.append("<h3>PAN ablation against matched controls</h3>" + _png(fig))

    border = _rows(con, "impact_border", "SELECT model_id, condition, distance_px, confidence FROM {t} "
                                         "ORDER BY model_id, condition, distance_px")
    if border:
        models = sorted({r["model_id"] for r in border})
        fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 2.8), squeeze=False)
        for ax, m in zip(axes[0], models, strict=True):
            for cond in sorted({r["condition"] for r in border if r["model_id"] == m}):
                pts = [r for r in border if r["model_id"] == m and r["condition"] == cond]
                ax.plot([p["distance_px"] for p in pts], [p["confidence"] for p in pts], marker="o", ms=3, label=cond)
            ax.set_title(m.split(":")[-1][-30:], fontsize=8)
            ax.set_xlabel("distance to nearest border (px)")
            ax.set_ylabel("confidence in patch class")
            ax.legend(fontsize=7)
        parts.append("<h3>Confidence against distance to the border</h3>" + _png(fig))

    shifts = _rows(con, "impact_classes", """
        SELECT model_id, condition, class_index, class_name, count_delta, prob_delta FROM (
          SELECT *, row_number() OVER (PARTITION BY model_id, condition ORDER BY abs(prob_delta) DESC) AS rk
          FROM {t} WHERE experiment <> 'control') WHERE rk <= 5
        ORDER BY model_id, condition, prob_delta DESC""")
    if shifts:
        parts.append("<h3>Classes that gain and lose most (mean probability)</h3>")
        parts.append(_table(shifts, ["model_id", "condition", "class_index", "class_name", "count_delta", "prob_delta"]))
    parts.append("</section>")
    return "\n".join(parts)
