"""Building a model, with and without the draws its own init or its checkpoint overwrites.

For each architecture, in one process, alternated, best of ``--repeats``: ``timm.create_model``
at random init, then with pretrained weights from a local safetensors file (a random-init state
dict saved first: no download), each plain and under
``pipeline.sources.overwritten_fills.overwritten_fills_skipped`` (what ``load_model`` does).
Prints the times, the fills skipped, and whether the loaded weights equal the file's exactly.

    python bench/bench_load.py [--models resnet50,vit_base_patch16_224] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm
import torch
from safetensors.torch import save_file

from pipeline.sources.overwritten_fills import overwritten_fills_skipped

MODELS = "resnet50,convnext_small,vit_base_patch16_224,efficientnet_b0,mobilenetv3_large_100"


def build(name: str, weights: str | None, skip: bool) -> tuple[float, torch.nn.Module, int]:
    kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": weights}} if weights else {}
    torch.manual_seed(0)
    started = time.perf_counter()
    if skip:
        with overwritten_fills_skipped() as mode:
            model = timm.create_model(name, **kwargs)
        skipped = mode.skipped
    else:
        model, skipped = timm.create_model(name, **kwargs), 0
    return time.perf_counter() - started, model, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'model':26} {'random init: plain':>19} {'skipping':>9} {'pretrained: plain':>18} {'skipping':>9}"
          f" {'skipped':>8}  weights equal the file")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            file = str(Path(tmp) / f"{name}.safetensors")
            state = timm.create_model(name).state_dict()
            save_file({k: v.contiguous() for k, v in state.items()}, file)
            cases = {(w, s): [] for w in (None, file) for s in (False, True)}
            for _ in range(args.repeats + 1):  # the first round warms up (imports, allocator)
                for (weights, skip), times in cases.items():
                    seconds, model, skipped = build(name, weights, skip)
                    times.append(seconds)
            best = {k: min(v[1:]) for k, v in cases.items()}
            equal = all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
            print(f"{name:26} {best[(None, False)]:17.3f} s {best[(None, True)]:7.3f} s "
                  f"{best[(file, False)]:16.3f} s {best[(file, True)]:7.3f} s {skipped:8d}  {equal}")


if __name__ == "__main__":
    main()
