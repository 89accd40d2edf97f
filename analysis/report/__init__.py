"""``pans report``: one self-contained HTML page of plots and tables over a results folder.

Sections are functions listed in ``analysis.report.sections.SECTIONS``; the impact section
(``analysis/report/impact.py``) adds the panel of every registered impact experiment.
"""

from __future__ import annotations

import html
import time
from importlib import resources
from pathlib import Path

from analysis.report.core import ReportContext, Section, SectionFn, figure_html, table_html
from pipeline.errors import PanSurveyError

__all__ = ["ReportContext", "Section", "SectionFn", "build_report", "figure_html", "render_html", "table_html"]


def _css() -> str:
    return resources.files("analysis").joinpath("templates", "report.css").read_text(encoding="utf-8")


def render_html(ctx: ReportContext, sections: list[Section], *, elapsed: float | None = None) -> str:
    """The whole page: header, a navigation bar of the sections, the sections, a footer."""
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>' for s in sections)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>PAN survey report: {html.escape(Path(ctx.directory).name or ctx.directory)}</title>
<style>{_css()}</style>
</head>
<body>
<header><h1>Padding Aware Neurons: survey report</h1>
<div class="sub">{html.escape(str(ctx.directory))} &middot; configuration {html.escape(ctx.config)}
&middot; generated {stamp}</div>
</header>
<nav>{nav}</nav>
<main>
{body}
</main>
<footer>pan-survey &middot; report built{took} &middot;
every number here is also a named query: pans query DIR --list</footer>
</body>
</html>
"""


def build_report(
    directory: str | Path,
    out: str | Path,
    *,
    config: str | None = None,
    tau: float | None = None,
    top_k: int = 30,
    sections: list[SectionFn] | None = None,
) -> Path:
    """Write the report of ``directory`` to ``out``; returns the path written."""
    from analysis import open as open_results
    from analysis.report.sections import SECTIONS

    started = time.perf_counter()
    con = open_results(directory, tau=tau, materialize=True)
    configs = [r[0] for r in con.execute("SELECT config_id FROM overview ORDER BY models DESC, config_id").fetchall()]
    if config is not None and config not in configs:
        known = ", ".join(configs) or "none"
        raise PanSurveyError(f"configuration {config!r} is not in {directory} (configurations: {known})")
    ctx = ReportContext(
        con=con,
        directory=str(directory),
        top_k=top_k,
        tau=tau,
        config=config or (configs[0] if configs else ""),
        configs=configs,
    )
    built = [s for fn in (sections or SECTIONS) if (s := fn(ctx)) is not None]
    page = render_html(ctx, built, elapsed=time.perf_counter() - started)
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise PanSurveyError(f"cannot write {path}: {exc.strerror}") from None
    return path
