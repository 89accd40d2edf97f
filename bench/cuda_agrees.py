"""CPU and CUDA agree on the shared trained models: neurons measured, PAN counts, z-scores.

    python bench/cuda_agrees.py                 # CPU vs CUDA (a GPU machine)
    python bench/cuda_agrees.py --other cpu     # CPU vs CPU: checks the script itself runs (no GPU)

Reads the trained weights in ../shared/models (or --models DIR). One row per model; exit 1 when a
model disagrees beyond the tolerance, 2 when the models are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: CPU and CUDA kernels sum in different orders: z-scores agree to this (as tests/test_gpu.py).
Z_TOLERANCE = 1e-2


def shared_models(folder: Path) -> dict[str, tuple[object, tuple[int, int, int]]]:
    """name -> (eval model, probe shape) for the three shared models."""
    from pipeline.sources import load_model
    from tests.reference_models import load_pnet, load_resnet20

    lite0 = load_model(f"local-dir:{folder / 'tf_efficientnet_lite0.in1k'}").model
    return {
        "tf_efficientnet_lite0.in1k": (lite0, (3, 224, 224)),
        "cifar10_resnet20": (load_resnet20(folder), (3, 32, 32)),
        "mtcnn_pnet": (load_pnet(folder), (3, 48, 48)),
    }


def compare(model, shape: tuple[int, int, int], other: str) -> dict[str, object]:
    import copy

    import torch

    from pipeline.detect import detect_pans

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    images = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0))
    a = detect_pans(copy.deepcopy(model), images, device="cpu").neurons
    b = detect_pans(copy.deepcopy(model), images, device=other).neurons
    z_columns = [c for c in a.column_names if c.startswith(("own_z_", "obs_z_"))]
    worst = 0.0
    for column in z_columns:
        x = torch.tensor([v if v is not None else 0.0 for v in a.column(column).to_pylist()])
        y = torch.tensor([v if v is not None else 0.0 for v in b.column(column).to_pylist()])
        if len(x) and len(x) == len(y):
            worst = max(worst, float(((x - y).abs() / (1 + x.abs())).max()))
    pans_a = sum(bool(v) for v in a.column("is_pan").to_pylist())
    pans_b = sum(bool(v) for v in b.column("is_pan").to_pylist())
    agree = a.num_rows == b.num_rows and worst <= Z_TOLERANCE and abs(pans_a - pans_b) <= max(1, pans_a // 100)
    return {"neurons": (a.num_rows, b.num_rows), "pans": (pans_a, pans_b), "worst_dz": worst, "agree": agree}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", default="cuda", help="device compared with the CPU (default cuda)")
    parser.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models")
    args = parser.parse_args()
    if not (args.models / "cifar10_resnet20.safetensors").is_file():
        print(f"cuda_agrees: no shared models in {args.models} (use --models DIR)", file=sys.stderr)
        return 2
    print(
        f"{'model':28s} {'neurons cpu/' + args.other:>22s} {'PANs cpu/' + args.other:>18s} {'max rel dz':>11s}  agree"
    )
    ok = True
    for name, (model, shape) in shared_models(args.models).items():
        row = compare(model, shape, args.other)
        ok &= bool(row["agree"])
        neurons, pans = row["neurons"], row["pans"]
        print(
            f"{name:28s} {f'{neurons[0]}/{neurons[1]}':>22s} {f'{pans[0]}/{pans[1]}':>18s} "
            f"{row['worst_dz']:11.2e}  {'yes' if row['agree'] else 'NO'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
