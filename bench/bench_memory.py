"""How close is the survey's memory estimate (pipeline/survey/memory.py) to what a model really uses?

    python bench/bench_memory.py                          # the default models, random init, batch 16
    python bench/bench_memory.py resnet50 convnext_tiny --batch-size 4 --image-size 224

For each model, a fresh process imports torch and timm, notes its resident memory, then loads the
model and runs the real detection (what a survey's detect task does) and notes its peak resident
memory. Prints the estimate beside the measured increase (peak minus after-import) and their
ratio: the estimate must not be below the measurement by much (two models that do not fit would
be co-scheduled), and not far above (the node would sit idle). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = ["resnet10t", "mobilenetv3_large_100", "efficientnet_b0", "resnet50", "convnext_tiny", "vit_small_patch16_224"]

_CHILD = r"""
import json, resource, sys
import timm, torch
from pipeline.runner import detect_loaded
from pipeline.settings import DetectSettings
from pipeline.sources import load_model, resolve_spec

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))

spec, batch, size = sys.argv[1], int(sys.argv[2]), (int(sys.argv[3]) or None)
torch.set_num_threads(1)
ref = resolve_spec(spec, random_init=True)[0]
base = rss()
loaded = load_model(ref)
detect_loaded(loaded, DetectSettings(num_images=batch, batch_size=batch, image_size=size))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak}))
"""


def main() -> None:
    from pipeline.settings import DetectSettings
    from pipeline.sources import resolve_spec
    from pipeline.survey.memory import estimate, fmt_gb

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=0, help="0: each model's native size")
    args = parser.parse_args()

    print(f"{'model':32} {'params':>8} {'estimate':>10} {'measured':>10} {'est/meas':>8}")
    for spec in args.models:
        ref = resolve_spec(spec, random_init=True)[0]
        est = estimate(ref, DetectSettings(batch_size=args.batch_size, image_size=args.image_size or None))
        run = subprocess.run(
            [sys.executable, "-c", _CHILD, spec, str(args.batch_size), str(args.image_size)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        )
        if run.returncode != 0:
            print(f"{spec:32} failed: {run.stderr.strip().splitlines()[-1:]}")
            continue
        got = json.loads(run.stdout.strip().splitlines()[-1])
        used = got["peak"] - got["base"]
        ratio = est.host_bytes / used if est.host_bytes and used > 0 else float("nan")
        params = f"{est.params / 1e6:.1f}M" if est.params else "?"
        host = fmt_gb(est.host_bytes) if est.host_bytes else "?"
        print(f"{spec:32} {params:>8} {host:>10} {fmt_gb(used):>10} {ratio:8.2f}", flush=True)


if __name__ == "__main__":
    main()
