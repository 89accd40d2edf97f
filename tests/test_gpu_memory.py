"""A detect task's GPU memory is capped at its GPU share (pipeline/survey/gpu_memory.py)."""

from __future__ import annotations

import pytest
import torch

from pipeline.survey.gpu_memory import cap_gpu_memory, memory_fraction


def test_the_fraction_is_the_gpu_share_below_one_gpu() -> None:
    assert memory_fraction({"GPU": 0.25, "CPU": 1.0}) == 0.25
    assert memory_fraction({"GPU": 1.0}) is None  # a whole GPU: no cap
    assert memory_fraction({"GPU": 2.0}) is None
    assert memory_fraction({"CPU": 1.0}) is None


def test_the_cap_is_set_with_the_tasks_share_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, int]] = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    assert cap_gpu_memory("cpu", {"GPU": 0.25}) is None
    assert calls == []  # the CPU device never touches CUDA
    assert cap_gpu_memory("cuda", {"GPU": 0.25, "CPU": 1.0}) == 0.25
    assert cap_gpu_memory("cuda:0", {"GPU": 0.5}) == 0.5
    assert cap_gpu_memory("cuda", {"GPU": 1.0}) is None  # a reused worker drops an earlier cap
    assert calls == [(0.25, 0), (0.5, 0), (1.0, 0)]


@pytest.mark.gpu
def test_a_capped_process_cannot_allocate_beyond_its_share() -> None:
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        cap_gpu_memory("cuda", {"GPU": 0.25})
        small = torch.empty(int(total * 0.1) // 4, dtype=torch.float32, device="cuda")  # fits the share
        del small
        with pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(total * 0.4) // 4, dtype=torch.float32, device="cuda")
    finally:
        cap_gpu_memory("cuda", {"GPU": 1.0})
        torch.cuda.empty_cache()
