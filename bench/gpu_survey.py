"""A survey of the bench models at a fractional GPU share, as one table: per model its status,
task time and peak GPU memory; then models per minute and GPU utilisation (sampled every 0.5 s).

    python bench/gpu_survey.py                      # CUDA machine: --gpus-per-model 0.25
    python bench/gpu_survey.py --device cpu         # no GPU: the same steps on the CPU (n/a for GPU columns)

Peak GPU memory per model is measured after the survey, one model at a time in this process
(``torch.cuda.max_memory_allocated`` with the survey's settings): Ray workers do not report it.
Used by bench/gpu_check.sh; prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_survey import SPEED_MODELS, GpuSampler

from pipeline.settings import DetectSettings
from pipeline.sources import ModelRef, resolve_spec
from pipeline.survey import SurveyOptions, run_survey


def peak_gpu_mb(ref: ModelRef, settings: DetectSettings) -> float | None:
    """Peak MB PyTorch allocated on the GPU detecting ``ref`` alone (None on the CPU)."""
    if settings.device == "cpu":
        return None
    import torch

    from pipeline.runner import run_model

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    run_model(ref, settings)
    return torch.cuda.max_memory_allocated() / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=SPEED_MODELS)
    parser.add_argument("--gpus-per-model", type=float, default=0.25)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: a temporary one)")
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    if on_gpu:
        import torch

        if not torch.cuda.is_available():
            print("gpu_survey: no CUDA device here (use --device cpu to check the steps)", file=sys.stderr)
            return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-survey-"))
    settings = DetectSettings(num_images=args.num_images)
    options = SurveyOptions(random_init=True, progress="off", gpus_per_model=args.gpus_per_model if on_gpu else 0)
    t0 = time.perf_counter()
    with GpuSampler() as gpu:
        summary = run_survey(list(args.models), out, settings, options)
    wall = time.perf_counter() - t0
    device_settings = replace(settings, device="cuda" if on_gpu else "cpu")
    print(f"{'model':44s} {'status':7s} {'device':6s} {'task s':>7s} {'peak GPU MB':>12s}  note")
    refs = {ref.model_id: ref for spec in args.models for ref in resolve_spec(spec, random_init=True)}
    for rec in summary.models:
        spec = rec.model_id
        peak = None
        if on_gpu and rec.status == "done":
            try:
                peak = peak_gpu_mb(refs[spec], device_settings)
            except Exception as exc:  # one model's problem is a row, not a dead table
                rec.message = f"peak measurement: {type(exc).__name__}"
        peak_text = f"{peak:12.0f}" if peak is not None else f"{'n/a':>12s}"
        print(
            f"{spec[:44]:44s} {rec.status:7s} {rec.device or '-':6s} {rec.task_seconds:7.1f} {peak_text}  "
            f"{(rec.message or '')[:60]}"
        )
    util = f"{gpu.mean:.0f}% mean, {gpu.max:.0f}% max over {len(gpu.samples)} samples" if gpu.samples else "n/a"
    print(
        f"survey: {summary.done} done, {summary.failed} failed in {wall:.1f} s (Ray start included) = "
        f"{summary.done / wall * 60:.1f} models/min at --gpus-per-model {options.gpus_per_model:g}; "
        f"GPU utilisation {util}; GPU memory used (device, sampled) max {gpu.max_memory_mb:.0f} MB"
        if gpu.memory_samples
        else f"survey: {summary.done} done, {summary.failed} failed in {wall:.1f} s (Ray start included) = "
        f"{summary.done / wall * 60:.1f} models/min at --gpus-per-model {options.gpus_per_model:g}; "
        f"GPU utilisation {util}"
    )
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
