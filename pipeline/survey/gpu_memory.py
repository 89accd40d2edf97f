"""Cap a detect task's GPU memory to its share of the GPU, so fractional tasks cannot starve each other.

Ray's ``num_gpus=0.25`` is bookkeeping only: four tasks share the device and each may allocate all
of it. ``torch.cuda.set_per_process_memory_fraction`` makes PyTorch's allocator refuse (a CUDA
out-of-memory error, which the survey retries once with twice the share and half the batch) beyond
the task's share. The cap is set at the start of every detect task, because workers are reused
and a retry has a larger share. (The CUDA context itself, a few hundred MB, is outside the cap.)
"""

from __future__ import annotations

from collections.abc import Mapping


def memory_fraction(assigned: Mapping[str, float]) -> float | None:
    """The fraction of one GPU a task may use: its ``GPU`` share when that is below one GPU, else None."""
    share = float(assigned.get("GPU", 0.0))
    return share if 0.0 < share < 1.0 else None


def cap_gpu_memory(device: str, assigned: Mapping[str, float] | None = None) -> float | None:
    """On a CUDA device, cap this process's allocator at the task's GPU share; returns the cap (or None).

    ``assigned`` defaults to the resources Ray gave the running task. A whole GPU (or none) is
    uncapped: the fraction is set back to 1.0 so a reused worker does not keep an earlier cap.
    """
    if not device.startswith("cuda"):
        return None
    import torch

    if assigned is None:
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()
    fraction = memory_fraction(assigned)
    index = torch.device(device).index or 0  # Ray sets CUDA_VISIBLE_DEVICES: the task's GPU is cuda:0
    torch.cuda.set_per_process_memory_fraction(fraction if fraction is not None else 1.0, index)
    return fraction
