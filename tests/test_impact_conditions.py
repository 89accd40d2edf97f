"""Condition bookkeeping: ablation and padding swaps touch only the passes they run in."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame

from pipeline.detect import detect_pans
from pipeline.impact.ablation import ablated_logits, channel_means, forward_batches
from pipeline.impact.errors import ImpactError
from pipeline.impact.padding_swap import padding_logits

CPU = torch.device("cpu")


class Net(nn.Module):
    def __init__(self, mode: str = "zeros") -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, padding_mode=mode)
        self.c2 = nn.Conv2d(8, 8, 5, stride=2, padding=2, padding_mode=mode)
        self.c3 = nn.Conv2d(8, 6, 3, padding="same", padding_mode=mode)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c2(F.relu(self.c1(x))))
        return self.head(F.relu(self.c3(x)).mean((2, 3)))


class Shared(nn.Module):
    """One conv module called twice per pass: the detector names the second call ``conv@2``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(F.relu(self.conv(x))).mean((2, 3)))


def _fixed() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Net().eval(), torch.randn(6, 3, 16, 16) + 0.5


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_ablation_restores_the_model_bit_for_bit() -> None:
    model, x = _fixed()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = forward_batches(model, x, batch_size=4, device=CPU)
    units = {"c1": [0, 3], "c3": [1]}
    means = channel_means(model, x, set(units), batch_size=4, device=CPU)
    ablated = ablated_logits(model, x, units, means, batch_size=4, device=CPU)
    after = forward_batches(model, x, batch_size=4, device=CPU)
    assert not torch.equal(ablated, before)  # the condition did something
    assert torch.equal(after, before)  # ... and left nothing behind
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert _no_hooks(model)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_counterfactual_equals_pytorch_padding_mode_and_restores(mode: str) -> None:
    model, x = _fixed()
    reference = Net(mode).eval()
    reference.load_state_dict(model.state_dict())
    before = forward_batches(model, x, batch_size=4, device=CPU)
    swapped, counts = padding_logits(model, x, mode, batch_size=4, device=CPU)
    torch.testing.assert_close(swapped, reference(x), rtol=0, atol=1e-6)
    assert counts.conv_padding == 3 and counts.fallbacks == 0
    assert torch.equal(forward_batches(model, x, batch_size=4, device=CPU), before)
    assert _no_hooks(model)


def test_padding_counterfactual_covers_dynamic_same_and_explicit_pads() -> None:
    torch.manual_seed(0)
    same = Conv2dSame(3, 4, 3, stride=2)  # pads with F.pad inside forward, padding=0 on the module
    plain = nn.Conv2d(3, 4, 3, stride=2)
    plain.load_state_dict(same.state_dict())
    model = nn.Sequential(same, nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(4, 2, 2), nn.Flatten())
    x = torch.randn(2, 3, 10, 10)
    out, counts = padding_logits(model, x, "reflect", batch_size=2, device=CPU)
    # 10 px, k3, s2 needs one pixel of padding: none before, one after (TF 'SAME').
    y = plain(F.pad(x, (0, 1, 0, 1), mode="reflect"))
    expected = model[2](F.pad(y, (1, 0, 1, 0), mode="reflect")).flatten(1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert counts.explicit_pad == 2


def test_reflect_on_a_map_too_small_falls_back_to_replicate_and_is_counted() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 5, padding=2), nn.Flatten())
    out, counts = padding_logits(model, torch.randn(1, 1, 2, 2), "reflect", batch_size=1, device=CPU)
    assert counts.fallbacks == 1 and out.shape == (1, 4)


def test_ablation_clamps_exactly_the_named_channels_to_their_probe_mean() -> None:
    model, x = _fixed()
    means = channel_means(model, x, {"c2"}, batch_size=6, device=CPU)
    seen: dict[str, torch.Tensor] = {}
    handle = model.c2.register_forward_hook(lambda _m, _i, out: seen.update(out=out.clone()))
    try:
        ablated_logits(model, x, {"c2": [2, 5]}, means, batch_size=6, device=CPU)
        clamped = seen["out"]
        forward_batches(model, x, batch_size=6, device=CPU)
        intact = seen["out"]
    finally:
        handle.remove()
    assert torch.all(clamped[:, [2, 5]] == means["c2"][[2, 5]].view(1, 2, 1, 1))
    others = [c for c in range(8) if c not in (2, 5)]
    assert torch.equal(clamped[:, others], intact[:, others])
    torch.testing.assert_close(means["c2"], intact.double().mean((0, 2, 3)).float())


def test_second_call_of_a_module_is_ablated_under_the_detectors_name() -> None:
    torch.manual_seed(0)
    model, x = Shared().eval(), torch.randn(4, 3, 12, 12) + 1.0
    layers = set(detect_pans(model, x, device="cpu").neurons.column("layer").to_pylist())
    assert layers == {"conv", "conv@2"}
    means = channel_means(model, x, layers, batch_size=4, device=CPU)
    outs: list[torch.Tensor] = []
    handle = model.conv.register_forward_hook(lambda _m, _i, out: outs.append(out.clone()))
    try:
        ablated_logits(model, x, {"conv@2": [1]}, means, batch_size=4, device=CPU)
    finally:
        handle.remove()
    first, second = outs
    assert torch.all(second[:, 1] == means["conv@2"][1])
    assert not torch.all(first[:, 1] == means["conv"][1])  # the first call is untouched


def test_a_layer_the_model_never_runs_is_a_clear_error() -> None:
    model, x = _fixed()
    with pytest.raises(ImpactError, match="never ran"):
        channel_means(model, x, {"c9"}, batch_size=4, device=CPU)
