"""The CUDA path: same numbers as the CPU, and the CLI and survey use the GPU when there is one.

Marked ``gpu``: skipped (by tests/conftest.py) on machines without CUDA, as in CI. Run them on a
GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import torch

from pipeline.cli import main
from pipeline.detect import detect_pans

pytestmark = pytest.mark.gpu

#: CPU and CUDA kernels sum in different orders (and cuDNN may use TF32): z-scores agree to this.
Z_TOLERANCE = 1e-2


def _model_and_probe() -> tuple[torch.nn.Module, torch.Tensor]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    return model, torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_cuda_gives_the_cpu_numbers() -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model, x = _model_and_probe()
    cpu = detect_pans(model, x, device="cpu").neurons
    gpu = detect_pans(model, x, device="cuda").neurons
    assert cpu.num_rows == gpu.num_rows > 0
    for column in ("own_z_top", "own_z_left", "obs_z_bottom", "scale"):
        a = torch.tensor([v if v is not None else 0.0 for v in cpu.column(column).to_pylist()])
        b = torch.tensor([v if v is not None else 0.0 for v in gpu.column(column).to_pylist()])
        assert torch.allclose(a, b, rtol=Z_TOLERANCE, atol=Z_TOLERANCE), column
    # Classification agrees wherever a neuron is not within the tolerance of the threshold.
    own = [c for c in cpu.column_names if c.startswith("own_z_")]
    margin = [max(abs(r[c] or 0.0) for c in own) for r in cpu.select(own).to_pylist()]
    same = [
        a == b
        for a, b, m in zip(cpu.column("is_pan").to_pylist(), gpu.column("is_pan").to_pylist(), margin, strict=True)
        if abs(m - 3.0) > Z_TOLERANCE
    ]
    assert all(same)


def test_gpu_run_is_deterministic() -> None:
    model, x = _model_and_probe()
    first = detect_pans(model, x, device="cuda").neurons
    again = detect_pans(model, x, device="cuda").neurons
    for column in ("own_z_top", "obs_z_top", "scale"):
        a = torch.tensor([v if v is not None else 0.0 for v in first.column(column).to_pylist()])
        b = torch.tensor([v if v is not None else 0.0 for v in again.column(column).to_pylist()])
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), column


def test_detect_cli_auto_device_uses_cuda(tmp_path: Path) -> None:
    out = tmp_path / "res"
    argv = ["detect", "resnet10t", "--random-init", "--out", str(out), "--num-images", "4", "--image-size", "64"]
    assert main(argv) == 0
    [(device,)] = duckdb.connect().execute(f"select device from '{out}/models/*.parquet'").fetchall()
    assert device.startswith("cuda")


@pytest.mark.ray
@pytest.mark.slow
def test_survey_detects_on_the_gpu(tmp_path: Path) -> None:
    from pipeline.settings import DetectSettings
    from pipeline.survey import SurveyOptions, run_survey

    settings = DetectSettings(probe="noise", num_images=4, image_size=64)
    options = SurveyOptions(random_init=True, progress="off")
    summary = run_survey(["resnet10t", "resnet18"], tmp_path / "r", settings, options)
    assert summary.done == 2 and summary.failed == 0
    devices = duckdb.connect().execute(f"select device from '{tmp_path}/r/models/*.parquet'").fetchall()
    assert {d for (d,) in devices} and all(d.startswith("cuda") for (d,) in devices)
