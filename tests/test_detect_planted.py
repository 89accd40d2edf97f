"""Planted PANs are recovered exactly; negative controls show none; numbers are invariant."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pipeline.detect import detect_pans

# Each planted filter: (taps carrying weight on the border ring, expected sides, expected sign).
# The input is positive, so zero padding *lowers* a filter whose border taps are positive
# (inhibited) and raises one whose border taps are negative (excited).
PLANTED = [
    ({(0, 1): 3.0}, "top", "inhibited"),
    ({(2, 1): -3.0}, "bottom", "excited"),
    ({(1, 0): 3.0}, "left", "inhibited"),
    ({(1, 2): -3.0}, "right", "excited"),
    ({(0, 1): 3.0, (1, 0): 3.0}, "top+left", "inhibited"),  # corner pair
    ({(0, 1): -3.0, (2, 1): -3.0}, "top+bottom", "excited"),  # opposite pair
    ({(0, 1): 3.0, (2, 1): 3.0, (1, 0): 3.0, (1, 2): 3.0}, "top+bottom+left+right", "inhibited"),
]
N_NEUTRAL = 9


def planted_conv(seed: int = 0) -> tuple[nn.Conv2d, list[tuple[str | None, str | None]]]:
    """A conv whose first filters are planted PANs and whose last ones are neutral.

    Neutral filters have random weights on every tap, but equal and opposite on two input
    channels with the same mean: their padded taps cancel, so padding does nothing to them.
    """
    g = torch.Generator().manual_seed(seed)
    k = len(PLANTED) + N_NEUTRAL
    conv = nn.Conv2d(2, k, 3, padding=1, bias=False)
    expected: list[tuple[str | None, str | None]] = []
    with torch.no_grad():
        conv.weight.zero_()
        for i, (taps, sides, sign) in enumerate(PLANTED):
            conv.weight[i, :, 1, 1] = 1.0
            for (a, b), v in taps.items():
                conv.weight[i, :, a, b] = v
            expected.append((sides, sign))
        for i in range(len(PLANTED), k):
            r = torch.randn(3, 3, generator=g)
            conv.weight[i, 0] = r
            conv.weight[i, 1] = -r
            conv.weight[i, 0, 1, 1] += 1.0  # keep a non-constant interior
            expected.append((None, None))
    return conv, expected


def positive_input(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 1.0 + 0.1 * torch.randn(n, 1, 32, 32, generator=g)
    return x.repeat(1, 2, 1, 1) + 0.05 * torch.randn(n, 2, 32, 32, generator=g)


def test_planted_pans_found_with_sides_and_signs():
    conv, expected = planted_conv()
    rows = detect_pans(conv, positive_input(), tau=3.0).neurons.to_pylist()
    predicted = {r["channel"] for r in rows if r["is_pan"]}
    planted = {i for i, (sides, _) in enumerate(expected) if sides}
    tp = len(predicted & planted)
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / len(planted)
    assert (precision, recall) == (1.0, 1.0)
    for r in rows:
        sides, sign = expected[r["channel"]]
        assert (r["pan_sides"], r["pan_sign"]) == (sides, sign), r["channel"]


def test_planted_detection_can_fail():
    """The same check flags a mistake: at an absurd threshold nothing is found, recall 0."""
    conv, _expected = planted_conv()
    rows = detect_pans(conv, positive_input(), tau=1e6).neurons.to_pylist()
    assert not any(r["is_pan"] for r in rows)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_non_zero_padding_modes_give_no_zero_padding_pans(mode: str):
    conv, _ = planted_conv()
    conv.padding_mode = mode
    rows = detect_pans(conv, positive_input(), tau=3.0).neurons.to_pylist()
    assert not any(r["is_pan"] for r in rows)
    assert max(max(abs(r[f"own_z_{s}"]) for s in ("top", "bottom", "left", "right")) for r in rows) < 1.0


def test_removing_padding_removes_the_scope():
    conv, _ = planted_conv()
    conv.padding = (0, 0)
    result = detect_pans(conv, positive_input(), tau=3.0)
    assert result.neurons.num_rows == 0
    assert result.summary["conv_neurons"] == conv.out_channels
    assert result.summary["padded_neurons"] == 0


def test_dead_neurons_are_flagged_never_pans():
    """A nearly dead planted PAN (weights x 1e-7) keeps its z-scores but is flagged, not ranked."""
    conv, _ = planted_conv()
    with torch.no_grad():
        conv.weight[0] *= 1e-7
    rows = detect_pans(conv, positive_input(), tau=3.0).neurons.to_pylist()
    assert abs(rows[0]["own_z_top"]) >= 3.0  # z is scale-free: it would pass as a PAN
    assert rows[0]["dead"] is True and rows[0]["is_pan"] is False
    assert not any(r["dead"] for r in rows[1:])


def test_batch_split_and_repeats_are_invariant():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
    )
    x = torch.rand(16, 3, 20, 20)
    whole = detect_pans(model, x, batch_size=16, device="cpu").neurons
    split = detect_pans(model, x, batch_size=8, device="cpu").neurons
    again = detect_pans(model, x, batch_size=16, device="cpu").neurons
    assert whole.equals(again)  # repeated runs on CPU: bit-identical (CUDA kernels need not be)
    cols = [c for c in whole.column_names if c.startswith(("own_z", "obs_z")) or c == "scale"]
    for c in cols:
        a = torch.tensor([v if v is not None else 0.0 for v in whole.column(c).to_pylist()])
        b = torch.tensor([v if v is not None else 0.0 for v in split.column(c).to_pylist()])
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), c  # stated tolerance: 1e-4 (z units)
