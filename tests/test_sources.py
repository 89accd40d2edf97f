"""Model sources offline: specs, the HF cache, torchvision's cache, models files, ``pans zoo``, bad specs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.cli import main
from pipeline.errors import (
    CorruptWeightsError,
    ModelLoadError,
    OfflineCacheMissError,
    PanSurveyError,
    UnknownModelError,
)
from pipeline.sources import (
    describe,
    fetch,
    has_padded_convs,
    load_model,
    read_models_file,
    resolve_spec,
    resolve_specs,
)
from tests.fixtures_hub import LITE0, put_in_cache

# --- spec grammar ----------------------------------------------------------------------------------


def test_bare_timm_name_means_its_default_pretrained_tag() -> None:
    import timm

    (ref,) = resolve_spec("resnet50")
    default = timm.models.get_pretrained_cfg("resnet50").tag
    assert ref.model_id == f"timm:resnet50.{default}" and ref.pretrained
    assert resolve_specs(["resnet50", f"timm:resnet50.{default}"]) == [ref]  # one model, two spellings


def test_random_init_is_labelled() -> None:
    (ref,) = resolve_spec("resnet50", random_init=True)
    assert ref.model_id == "timm:resnet50@random-init" and not ref.pretrained
    loaded = load_model(resolve_spec("test_resnet", random_init=True)[0])
    assert loaded.record()["pretrained"] is False and loaded.weights_sha256 is None


def test_wildcards_expand_to_pretrained_tags_unless_random_init() -> None:
    import timm

    refs = resolve_spec("efficientnet_b[0-3]*")
    assert [r.name for r in refs] == timm.list_models("efficientnet_b[0-3]*", pretrained=True)
    assert all("." in r.name for r in refs)
    tagged = resolve_spec("*.in1k")
    assert tagged and all(r.name.endswith(".in1k") for r in tagged)
    archs = resolve_spec("efficientnet_b[0-3]*", random_init=True)
    assert all("." not in r.name and r.model_id.endswith("@random-init") for r in archs)
    assert {r.name for r in archs} >= {r.name.split(".")[0] for r in refs}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_model", "unknown timm model"),
        ("resnet50.no_such_tag", "no pretrained tag"),
        ("nothing_matches_this*", "no timm model matches"),
        ("hf-hub:not a repo", "expected hf-hub:ORG/NAME"),
        ("torchvision:resnet50:NO_SUCH_WEIGHTS", "IMAGENET1K_V1"),
        ("torchvision:no_such_net", "unknown torchvision model"),
        ("local-dir:/missing", "no config.json"),
        ("py:missing.py:f", "no such file"),
        ("py:missing.py", "expected py:FILE.py:FUNCTION"),
        ("timm:", "empty model spec"),
    ],
)
def test_bad_specs_fail_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(UnknownModelError, match=message) as info:
        resolve_spec(spec)
    assert "\n" not in str(info.value)


def test_torchvision_spec_resolves_default_weights_by_name() -> None:
    (ref,) = resolve_spec("torchvision:resnet50")
    assert ref.model_id == "torchvision:resnet50:IMAGENET1K_V2"
    assert resolve_spec("torchvision:resnet50:IMAGENET1K_V1")[0].model_id.endswith(":IMAGENET1K_V1")


# --- models files ----------------------------------------------------------------------------------


def test_models_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "models.txt"
    f.write_text("# my survey\nresnet18.a1_in1k\n\n  torchvision:mobilenet_v2   # the classic\n#resnet50\n'resnet1*'\n")
    assert read_models_file(f) == ["resnet18.a1_in1k", "torchvision:mobilenet_v2", "resnet1*"]


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_empty_models_file_is_an_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "models.txt"
    f.write_text(text)
    with pytest.raises(PanSurveyError, match="lists no models"):
        read_models_file(f)


# --- the HF cache, offline -------------------------------------------------------------------------


@pytest.mark.shared_models
def test_real_lite0_loads_from_the_hf_cache_offline(lite0_cache: Path, shared_models: Path) -> None:
    import numpy as np
    from skimage import data

    loaded = load_model("tf_efficientnet_lite0")
    weights = shared_models / LITE0 / "model.safetensors"
    assert loaded.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    commit = (lite0_cache / f"models--timm--{LITE0}" / "refs" / "main").read_text()
    assert loaded.revision == commit
    assert loaded.preprocess.mean == (0.5, 0.5, 0.5) and loaded.preprocess.interpolation == "bicubic"
    # Trained weights, really: the cat photo is classified as a cat (ImageNet classes 281-285).
    img = torch.from_numpy(np.ascontiguousarray(data.chelsea())).permute(2, 0, 1).float()[None] / 255
    img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top = loaded.model((img - 0.5) / 0.5).argmax(1).item()
    assert 281 <= top <= 285


def test_tiny_timm_exports_load_by_name_offline(hf_cache: Path, tiny_timm_export) -> None:
    for arch in ("test_resnet", "test_efficientnet", "test_vit"):
        folder = tiny_timm_export(arch)
        commit = put_in_cache(
            hf_cache,
            f"timm/{arch}.r160_in1k",
            {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"},
        )
        loaded = load_model(arch)  # bare name: default tag r160_in1k, from the cache
        assert loaded.revision == commit
        published = load_file(folder / "model.safetensors")
        state = loaded.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in published.items())
        assert has_padded_convs(loaded.model) == (arch != "test_vit")


def test_offline_miss_names_what_is_missing(hf_cache: Path) -> None:
    with pytest.raises(OfflineCacheMissError, match=r"timm/resnet18\.a1_in1k.*offline"):
        fetch("resnet18.a1_in1k")


def test_corrupted_cache_files_are_never_loaded(hf_cache: Path, tiny_timm_export) -> None:
    folder = tiny_timm_export("test_resnet")
    data = (folder / "model.safetensors").read_bytes()
    config = folder / "config.json"
    # Bit rot: the blob no longer matches the sha256 it is named by; offline it cannot be re-fetched.
    put_in_cache(hf_cache, "org/rotten", {"config.json": config, "model.safetensors": data})
    blob = (hf_cache / "models--org--rotten" / "snapshots").glob("*/model.safetensors").__next__().resolve()
    blob.write_bytes(data[:-1000])
    with pytest.raises(CorruptWeightsError, match="sha256") as info:
        load_model("hf-hub:org/rotten")
    assert "\n" not in str(info.value)
    # A truncated file with no published hash to compare against: safetensors refuses it.
    put_in_cache(hf_cache, "org/short", {"config.json": config, "model.safetensors": data[:-1000]})
    with pytest.raises(ModelLoadError, match="SafetensorError"):
        load_model("hf-hub:org/short")


def test_local_dir_records_hash_and_preprocess(tiny_timm_export) -> None:
    folder = tiny_timm_export("test_efficientnet")
    loaded = load_model(f"local-dir:{folder}")
    assert loaded.weights_sha256 == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert loaded.preprocess.input_size == (3, 160, 160)


# --- torchvision -----------------------------------------------------------------------------------


def test_torchvision_weights_from_torch_home(hf_cache: Path, tmp_path: Path) -> None:
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

    weights = MobileNet_V3_Small_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    state = mobilenet_v3_small(weights=None).state_dict()
    target = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(state, target)

    loaded = load_model("torchvision:mobilenet_v3_small")
    assert loaded.model_id == "torchvision:mobilenet_v3_small:IMAGENET1K_V1"
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    assert loaded.weights_sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert loaded.revision == "IMAGENET1K_V1"
    assert loaded.top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert loaded.class_names is not None and len(loaded.class_names) == 1000
    pp = loaded.preprocess
    assert pp.input_size == (3, 224, 224) and pp.crop_pct == pytest.approx(224 / 256) and pp.interpolation == "bilinear"

    with pytest.raises(OfflineCacheMissError, match="resnet18"):  # not in TORCH_HOME, and offline
        load_model("torchvision:resnet18")


# --- describe / pans zoo ---------------------------------------------------------------------------


def test_describe_reads_padding_on_the_meta_device() -> None:
    cnn = describe("resnet18.a1_in1k")
    assert cnn["has_padded_convs"] and cnn["num_params"] == 11_689_512 and cnn["license"] == "apache-2.0"
    vit = describe("vit_tiny_patch16_224")
    assert vit["has_padded_convs"] is False and vit["note"] == "no padded convolutions"


def test_padding_detection_covers_same_family_and_pad_modules() -> None:
    import timm.layers
    from torch import nn

    assert not has_padded_convs(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1, padding="same")))
    assert has_padded_convs(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)))
    assert has_padded_convs(nn.Sequential(nn.Conv2d(3, 8, 3, padding="same")))
    assert has_padded_convs(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 8, 3)))
    assert has_padded_convs(nn.Sequential(timm.layers.Conv2dSame(3, 8, 3, stride=2)))
    assert not has_padded_convs(nn.Sequential(timm.layers.Conv2dSame(3, 8, 1)))


def test_zoo_wildcard_lists_models_without_network(stand_in_hub, capsys: pytest.CaptureFixture[str]) -> None:
    import timm

    # Online, with HF_ENDPOINT at the stand-in: any request would be logged there.
    assert main(["zoo", "resnet1*", "torchvision:mobilenet_v2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [f"timm:{n}" for n in timm.list_models("resnet1*", pretrained=True)]
    assert [r["model_id"] for r in rows] == [*expected, "torchvision:mobilenet_v2:IMAGENET1K_V2"]
    assert all(r["has_padded_convs"] and r["num_params"] > 1e6 for r in rows)
    assert not stand_in_hub.requests


def test_zoo_table_and_models_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "models.txt"
    f.write_text("resnet18.a1_in1k  # a CNN\nvit_tiny_patch16_224\n")
    assert main(["zoo", "--models-file", str(f)]) == 0
    out = capsys.readouterr().out
    assert "timm:resnet18.a1_in1k" in out and "11.7M" in out and "yes (" in out
    assert "note: timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k: no padded convolutions" in out
    assert "2 model(s)" in out


def test_zoo_allocates_no_weights(tmp_path: Path) -> None:
    """An 846M-parameter model (3.4 GB of float32) is described with far less memory than that.

    Measured as the growth of the process's peak RSS across the command, after torch and timm are
    imported: the absolute peak also counts the pages of torch's shared libraries, which vary with
    the page cache (1.58 GB once in a CI run, 0.75 GB usually) and say nothing about weights.
    """
    code = (
        "import resource, sys, torch, timm; from pipeline.cli import main; import pipeline.sources; "
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; before = peak(); "
        "rc = main(['zoo', 'convnext_xxlarge.clip_laion2b_soup_ft_in1k', '--json']); "
        "print(before, peak(), file=sys.stderr); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["num_params"] > 800e6
    before, after = (int(v) / 1024 for v in proc.stderr.strip().splitlines()[-1].split())
    assert after - before < 1000, (before, after)  # the weights alone would be 3,400 MiB


@pytest.mark.parametrize(
    "argv",
    [
        ["zoo", "no_such_model"],
        ["zoo", "hf-hub:nobody/nothing", "--offline"],
        ["zoo", "local-dir:/missing"],
        ["zoo", "py:missing.py:f"],
        ["zoo", "torchvision:resnet50:NO_SUCH_WEIGHTS"],
        ["zoo", "--models-file", "EMPTY"],
        ["zoo"],
        ["detect", "no_such_model", "--out", "OUT"],
        ["detect", "hf-hub:nobody/nothing", "--out", "OUT"],
    ],
)
def test_bad_specs_on_the_command_line(
    argv: list[str], hf_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n")
    argv = [str(empty) if a == "EMPTY" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"pans {argv[0]}: error: ") and "Traceback" not in err


def test_detect_cli_loads_from_the_hf_cache(
    hf_cache: Path, tiny_timm_export, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    folder = tiny_timm_export("test_resnet")
    commit = put_in_cache(
        hf_cache,
        "timm/test_resnet.r160_in1k",
        {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"},
    )
    out = tmp_path / "results"
    assert main(["detect", "test_resnet", "--out", str(out), "--num-images", "2", "--probe", "noise"]) == 0
    assert "timm:test_resnet.r160_in1k" in capsys.readouterr().out
    models = pq.read_table(next((out / "models").glob("*.parquet"))).to_pylist()[0]
    assert models["revision"] == commit
    assert models["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert models["pretrained"] is True and models["pretrained_tag"] == "r160_in1k"


@pytest.mark.parametrize("command", ["detect", pytest.param("survey", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_offline_flag_fails_at_once_without_the_environment_variable(command: str, tmp_path: Path) -> None:
    """``--offline`` alone (no HF_HUB_OFFLINE) must not touch the network: a cache miss is one line, fast.

    The endpoint is a closed local port, so an attempt to reach the hub would show up as retries
    (tens of seconds) and a connection error instead of the offline message.
    """
    import os
    import time

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9", PANS_FETCH_TOTAL_SECONDS="60")
    argv = [sys.executable, "-m", "pipeline.cli", command, "hf-hub:nobody/nothing", "--offline"]
    argv += ["--out", str(tmp_path / "out"), "--num-images", "2"]
    if command == "survey":
        argv += ["--num-cpus", "1", "--progress", "off"]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    elapsed = time.monotonic() - t0
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text
    assert "offline" in text.lower(), text
    if command == "detect":
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, text
        assert elapsed < 30, elapsed
    else:  # the survey records the miss as a failure and goes on
        failures = list((tmp_path / "out" / "failures").glob("*.parquet"))
        assert failures, text


def test_random_init_weights_are_the_same_in_every_load_and_leave_the_callers_rng_alone() -> None:
    from pipeline.sources import load_model

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = load_model("resnet10t", random_init=True).model.state_dict()
    after = torch.rand(3)
    b = load_model("resnet10t", random_init=True).model.state_dict()
    assert torch.equal(before, after)  # the caller's random stream is untouched
    assert all(torch.equal(a[k], b[k]) for k in a)
