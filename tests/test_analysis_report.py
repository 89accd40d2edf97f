"""``pans report``: a self-contained HTML page that a real headless browser renders without errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis.synthetic import build_folder
from pipeline.cli import main
from pipeline.schema import table_from_rows
from pipeline.store import ResultStore

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report") / "results"
    build_folder(root, models=6, neurons_per_model=200, failures=2, seed=5)
    rows = [
        {
            "model_id": "timm:resnet50.synthetic_0",
            "config_id": "cfgsynthetic",
            "experiment": "ablation",
            "condition": c,
            "seed": s,
            "metric": "top1_agreement",
            "value": v,
        }
        for c, s, v in (("pan_ablation", 0, 0.91), ("random_control", 0, 0.99), ("random_control", 1, 0.98))
    ]
    ResultStore(root).write("impact", "k", table_from_rows("impact", rows))
    out = root.parent / "report.html"
    assert main(["report", str(root), "--out", str(out), "--top-k", "4"]) == 0
    return out


def test_report_is_self_contained(report: Path):
    page = report.read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 8
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    for section in (
        "overview",
        "models",
        "families",
        "depth",
        "types",
        "layers",
        "size",
        "kernels",
        "border",
        "impact",
        "failures",
    ):
        assert f'<section id="{section}">' in page
    assert "synthetic failure number 1" in page  # the failures table
    assert "random_control" in page  # the impact hook shows the impact rows


def test_report_of_an_empty_folder(tmp_path: Path, capsys):
    ResultStore(tmp_path / "r").ensure()
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "e.html")]) == 0
    page = (tmp_path / "e.html").read_text()
    assert "No finished models" in page and "<img" not in page
    assert main(["report", str(tmp_path / "r"), "--config", "nope", "--out", str(tmp_path / "x.html")]) == 2
    assert "configuration 'nope' is not in" in capsys.readouterr().err


def _chromium(args: list[str], profile: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path):
    # A copy with a probe script: on load it counts images that decoded (naturalWidth > 0) and logs it,
    # which also proves that console output reaches the captured log (so "no errors" means something).
    probe = tmp_path / "probe.html"
    script = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
      document.body.setAttribute('data-images', ok + '/' + imgs.length);
      console.log('PANS_REPORT_CHECK images=' + ok + '/' + imgs.length);
    });</script></body>"""
    probe.write_text(report.read_text().replace("</body>", script))
    result = _chromium(
        ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        tmp_path / "profile",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    marker = re.search(r'data-images="(\d+)/(\d+)"', result.stdout)
    assert marker, "page did not finish loading"
    loaded, total = map(int, marker.groups())
    assert total >= 8 and loaded == total
    assert "Padding Aware Neurons" in result.stdout
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert any("PANS_REPORT_CHECK" in line for line in console), result.stderr[-2000:]
    errors = [line for line in console if "PANS_REPORT_CHECK" not in line]
    assert not errors, errors
    assert "Uncaught" not in result.stderr and "Failed to load resource" not in result.stderr

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    result = _chromium(
        ["--hide-scrollbars", "--window-size=1280,3000", f"--screenshot={shot}", report.as_uri()], tmp_path / "profile2"
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    from PIL import Image, ImageStat

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 3000)
    assert max(ImageStat.Stat(image).stddev) > 20  # not blank: text, charts and colour
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 200
    shutil.copy(report, ARTIFACTS / "report.html")
