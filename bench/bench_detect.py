"""Detection cost against a plain forward pass (same model, batch, device).

Prints, for timm resnet50 at 224 px and batch 16 by default:
- time ratio: detect_pans wall time / plain forward wall time (goal <= 1.25; floor 1.0),
- peak memory ratio: peak RSS growth during detection / during the plain forward (goal <= 1.2),
each measured in a fresh subprocess so the peaks do not mix. Random-init weights (timing and
memory do not depend on the values). Usage:

    python bench/bench_detect.py [--model resnet50] [--batch 16] [--size 224] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, gc
import torch, timm
from pipeline.detect import detect_pans
mode, name, batch, size, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
model = timm.create_model(name, pretrained=False).eval()
x = torch.randn(batch, 3, size, size)
def rss():  # current resident set size in MiB
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
with torch.no_grad():
    model(x[:2])  # warm up allocator and kernels
gc.collect()
base = rss()
times = []
for _ in range(repeats):
    t = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            model(x)
    else:
        detect_pans(model, x, batch_size=batch, device="cpu")
    times.append(time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": min(times), "all": times, "peak_mib": peak, "base_mib": base}))
"""


def measure(mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-c", CHILD, mode, args.model, str(args.batch), str(args.size), str(args.repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    fwd, det = measure("forward", args), measure("detect", args)
    time_ratio = det["seconds"] / fwd["seconds"]
    mem_ratio = (det["peak_mib"] - det["base_mib"]) / max(fwd["peak_mib"] - fwd["base_mib"], 1e-9)
    print(f"model {args.model}, batch {args.batch}, {args.size} px, CPU, best of {args.repeats}")
    print(f"plain forward   {fwd['seconds']:.3f} s   peak RSS {fwd['peak_mib']:.0f} MiB (base {fwd['base_mib']:.0f})")
    print(f"detect_pans     {det['seconds']:.3f} s   peak RSS {det['peak_mib']:.0f} MiB (base {det['base_mib']:.0f})")
    print(f"time ratio      {time_ratio:.3f}   (goal <= 1.25)")
    print(f"memory ratio    {mem_ratio:.3f}   (peak growth over base; goal <= 1.2)")


if __name__ == "__main__":
    main()
