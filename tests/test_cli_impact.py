"""``pans impact`` end to end: tables DuckDB can read, accuracy from an ImageFolder, one-line errors."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from tests.toy_models import CLASS_NAMES, border_task, to_pixels

TOY = Path(__file__).resolve().with_name("toy_models.py")
TRAINED = f"py:{TOY}:trained_border_cnn"
UNTRAINED = f"py:{TOY}:BorderCNN"  # same classes (far, near), no training: for the error cases


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The toy is tiny: one thread is as fast, and much faster when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_image_folder(root: Path, n: int = 40, seed: int = 5) -> Path:
    """The toy task as PNGs in ImageFolder layout: ``root/near/*.png`` and ``root/far/*.png``."""
    images, labels = border_task(n, seed=seed)
    pixels = (to_pixels(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, (img, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
        folder = root / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def test_impact_on_the_toy_with_an_image_folder(tmp_path: Path, capsys) -> None:
    images = write_image_folder(tmp_path / "images")
    out = tmp_path / "res"
    # The toy's PANs read a constant input plane that photos do not have: probe with its own images.
    rc = main(["impact", TRAINED, "--out", str(out), "--images", str(images), "--probe", str(images),
               "--num-images", "32", "--controls", "3", "--padding-modes", "reflect", "--border-patches", "2",
               "--border-grid", "4", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "intact accuracy" in printed and "PAN ablation" in printed and str(out) in printed

    for table in ("impact", "impact_classes", "impact_border"):
        assert len(list((out / table).glob("*.parquet"))) == 1, table
    con = duckdb.connect()
    accuracy = dict(con.execute(
        f"SELECT condition, value FROM read_parquet('{out}/impact/*.parquet') "
        "WHERE metric = 'accuracy' AND condition IN ('intact', 'pan_ablation')"
    ).fetchall())
    assert set(accuracy) == {"intact", "pan_ablation"}
    assert accuracy["intact"] >= 0.9  # the labels from near/ and far/ were read as the model's classes
    assert accuracy["pan_ablation"] <= accuracy["intact"] - 0.2  # without its PANs the toy cannot see the border
    controls = con.execute(
        f"SELECT count(*) FROM read_parquet('{out}/impact/*.parquet') "
        "WHERE condition = 'random_control' AND metric = 'accuracy'"
    ).fetchone()[0]
    assert controls == 3
    classes = con.execute(f"SELECT DISTINCT class_name FROM read_parquet('{out}/impact_classes/*.parquet')").fetchall()
    assert {c[0] for c in classes} <= set(CLASS_NAMES)
    border = con.execute(
        f"SELECT DISTINCT condition FROM read_parquet('{out}/impact_border/*.parquet')"
    ).fetchall()
    assert {c[0] for c in border} == {"intact", "pan_ablation", "random_control"}
    runs = con.execute(f"SELECT command, config_json FROM read_parquet('{out}/runs/*.parquet')").fetchall()
    assert runs[0][0] == "impact" and '"controls": 3' in runs[0][1]

    # `pans report` draws the impact section from these tables: the summary, the controls plot, the border curves.
    page_path = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(page_path)]) == 0
    page = page_path.read_text()
    section = page[page.index('<section id="impact">'):]
    section = section[: section.index("</section>")]
    assert "PAN ablation against matched controls" in section and "distance to the border" in section
    assert section.count("<img") >= 2 and "trained_border_cnn" in section


def _bad(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """Arguments for one bad-input case and a phrase its error message must contain."""
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return ["--images", str(tmp_path / "empty")], "holds no images"
    if case == "unreadable images":
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "x.png").write_bytes(b"not a png at all" * 20)
        return ["--images", str(tmp_path / "junk")], "cannot read image"
    if case == "missing images path":
        return ["--images", str(tmp_path / "nowhere")], "not a folder"
    images = write_image_folder(tmp_path / "images", n=4)
    if case == "labels file with unknown classes":
        near = sorted((images / "near").iterdir())[0].relative_to(images)
        far = sorted((images / "far").iterdir())[0].relative_to(images)
        labels = tmp_path / "labels.tsv"
        labels.write_text(f"# path\tlabel\n{near}\tzebra\n{far}\tfar\n")
        return ["--images", str(images), "--labels", str(labels)], "zebra"
    if case == "folder of unknown classes":
        (images / "near").rename(images / "zebra")
        return ["--images", str(images)], "zebra"
    if case == "missing labels file":
        return ["--images", str(images), "--labels", str(tmp_path / "none.tsv")], "cannot read labels file"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["empty folder", "unreadable images", "missing images path",
                                  "labels file with unknown classes", "folder of unknown classes",
                                  "missing labels file"])
def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys, case: str) -> None:
    args, phrase = _bad(tmp_path, case)
    out = tmp_path / "res"
    rc = main(["impact", UNTRAINED, "--out", str(out), *args, "--probe", "noise", "--num-images", "2"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("pans impact: error:"), err
    assert phrase in err and "Traceback" not in err
    assert not list(out.glob("impact*/*.parquet"))  # nothing half-done was written


def test_unknown_class_error_names_the_model_classes(tmp_path: Path, capsys) -> None:
    args, _ = _bad(tmp_path, "folder of unknown classes")
    assert main(["impact", UNTRAINED, "--out", str(tmp_path / "res"), *args, "--probe", "noise"]) == 2
    err = capsys.readouterr().err
    assert "zebra" in err and "far, near" in err


def test_impact_takes_exactly_one_model(tmp_path: Path, capsys) -> None:
    assert main(["impact", "resnet1*t", "--out", str(tmp_path / "res"), "--random-init"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes one" in err
