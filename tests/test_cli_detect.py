"""``pans detect`` end to end: a results folder DuckDB can read, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from pipeline.cli import main

FACTORIES = '''
import torch.nn as nn

def small():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1))
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    return model

def not_a_module():
    return 42

def broken():
    raise RuntimeError("boom")
'''


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    return path


def test_detect_py_factory_writes_tables(tmp_path, factory_file, capsys):
    out = tmp_path / "res"
    rc = main(["detect", f"py:{factory_file}:small", "--out", str(out), "--num-images", "4", "--probe", "noise"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "PANs" in printed and str(out) in printed
    con = duckdb.connect()
    sql = f"select padded_neurons, conv_neurons, image_h, probe, pretrained from '{out}/models/*.parquet'"
    models = con.execute(sql).fetchall()
    assert models == [(12, 12, 32, "noise", True)]
    n = con.execute(f"select count(*) from '{out}/neurons/*.parquet'").fetchall()[0][0]
    assert n == 12
    runs = con.execute(f"select command, config_json from '{out}/runs/*.parquet'").fetchall()
    assert runs[0][0] == "detect"
    config = json.loads(runs[0][1])  # the same shape as a survey's: settings as given and as they count
    assert config["settings"]["probe"] == "noise" and config["result_settings"]["detector_version"]
    assert config["random_init"] is False and config["argv"]


def test_detect_timm_random_init_is_labelled_untrained(tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["detect", "resnet10t", "--random-init", "--out", str(out), "--num-images", "2", "--image-size", "64"])
    assert rc == 0
    assert "random init" in capsys.readouterr().out
    row = duckdb.connect().execute(f"select model_id, pretrained from '{out}/models/*.parquet'").fetchall()
    assert row == [("timm:resnet10t@random-init", False)]


def test_detect_image_folder_probe(tmp_path, factory_file):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (40 * i, 100, 200)).save(folder / f"{i}.png")
    out = tmp_path / "res"
    argv = ["detect", f"py:{factory_file}:small", "--out", str(out), "--probe", str(folder), "--num-images", "3"]
    assert main(argv) == 0
    probe = duckdb.connect().execute(f"select probe from '{out}/models/*.parquet'").fetchall()[0][0]
    assert probe == f"folder:{folder.resolve()}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_model_xyz"], "unknown timm model"),
        (["py:/missing/file.py:f"], "no such file"),
        (["py:{factory}:not_a_module"], "not a torch nn.Module"),
        (["py:{factory}:broken"], "raised RuntimeError: boom"),
        (["py:{factory}:nowhere"], "has no function"),
        (["local-dir:/missing/dir"], "no config.json"),
        (["py:{factory}:small", "--probe", "{empty}"], "holds no images"),
        (["py:{factory}:small", "--probe", "/no/such/folder"], "does not exist"),
        (["py:{factory}:small", "--device", "cuda:0"], None),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, factory_file, capsys, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(factory=factory_file, empty=empty) for a in args]
    if "--device" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        message = "CUDA is not available"
    rc = main(["detect", *args, "--out", str(tmp_path / "res"), "--num-images", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("option", [["--num-images", "0"], ["--tau", "abc"], ["--batch-size", "-3"]])
def test_malformed_option_is_usage_error(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exc:
        main(["detect", "resnet18", "--out", str(tmp_path), *option])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("pans detect: error: argument ")
    assert option[0] in err and len(err.strip().splitlines()) == 2  # the error and a --help hint
