"""The detector's numbers against a brute-force computation with a second, full convolution.

For each kind of padded convolution, compute (output with the layer's padding) - (output with
replicate padding) over whole maps, average it over each side's border, and compare with own_z;
likewise obs_z and scale. Also checks that layer discovery reads the padding each kind applies.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame

from pipeline.detect import detect_pans
from pipeline.schema import SIDES
from tests.test_detect_geometry import brute_force_masks, one_side_masks


def _conv(module: nn.Conv2d | Conv2dSame) -> nn.Conv2d:
    return module


KINDS = {
    # name: (model, expected pads (t, b, l, r), padding_kind, padding_mode)
    "sym_s1": (lambda: nn.Conv2d(3, 6, 3, padding=1), (1, 1, 1, 1), "symmetric", "zeros"),
    "s2_even": (lambda: nn.Conv2d(3, 6, 3, stride=2, padding=1), (1, 1, 1, 1), "symmetric", "zeros"),
    "k5_d2": (lambda: nn.Conv2d(3, 4, 5, padding=4, dilation=2), (4, 4, 4, 4), "symmetric", "zeros"),
    "same_even_k": (lambda: nn.Conv2d(3, 4, 4, padding="same"), (1, 2, 1, 2), "same", "zeros"),
    "tf_same_s2": (lambda: Conv2dSame(3, 5, 3, stride=2), (0, 1, 0, 1), "dynamic_same", "zeros"),
    "explicit_pad": (
        lambda: nn.Sequential(nn.ZeroPad2d((2, 0, 1, 0)), nn.Conv2d(3, 4, 3)),
        (1, 0, 2, 0),
        "explicit",
        "zeros",
    ),
    "explicit_plus_internal": (
        lambda: nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, stride=2, padding=1)),
        (1, 2, 1, 2),
        "explicit",
        "zeros",
    ),
    "depthwise": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), (1, 1, 1, 1), "symmetric", "zeros"),
    "grouped": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (1, 1, 1, 1), "symmetric", "zeros"),
    "reflect": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (1, 1, 1, 1), "symmetric", "reflect"),
    "circular": (lambda: nn.Conv2d(3, 4, 3, padding=2, padding_mode="circular"), (2, 2, 2, 2), "symmetric", "circular"),
}


def _brute_force(conv: nn.Conv2d, x: torch.Tensor, pads, mode: str, reference: str):
    """own/obs per side and scale, computed on whole maps with two full convolutions."""
    t, b, left, r = pads
    k = conv.weight.shape[-1]
    s, d = conv.stride[0], conv.dilation[0]
    actual_in = F.pad(x, (left, r, t, b)) if mode == "zeros" else F.pad(x, (left, r, t, b), mode=mode)
    if reference == "replicate":
        ref_in = F.pad(x, (left, r, t, b), mode="replicate")
    else:
        mu = x.mean(dim=(0, 2, 3), keepdim=True)
        ref_in = F.pad(x - mu, (left, r, t, b)) + mu
    args = (conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
    y, y_ref = F.conv2d(actual_in, *args), F.conv2d(ref_in, *args)
    reads = brute_force_masks(x.shape[2], x.shape[3], k, s, d, pads)
    interior = ~(reads["top"] | reads["bottom"] | reads["left"] | reads["right"])
    masks = one_side_masks(reads)
    yi = y[:, :, interior]
    scale = yi.double().std(dim=(0, 2), correction=0)
    mean_i = yi.double().mean(dim=(0, 2))
    own, obs = {}, {}
    for side in SIDES:
        m = masks[side]
        if m.any():
            own[side] = (y - y_ref)[:, :, m].double().mean(dim=(0, 2)) / scale
            obs[side] = (y[:, :, m].double().mean(dim=(0, 2)) - mean_i) / scale
    return own, obs, scale, y


@pytest.mark.parametrize("reference", ["replicate", "mean"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_own_and_obs_match_brute_force(kind: str, reference: str):
    torch.manual_seed(0)
    make, pads, padding_kind, mode = KINDS[kind]
    model = make().eval()
    conv = model[-1] if isinstance(model, nn.Sequential) else model
    channels = conv.in_channels
    x = torch.rand(6, channels, 16, 18) + torch.linspace(0, 1, 18)  # non-constant, positive
    result = detect_pans(model, x, tau=3.0, batch_size=4, reference=reference)
    layer = result.layers.to_pylist()[0]
    assert (layer["pad_top"], layer["pad_bottom"], layer["pad_left"], layer["pad_right"]) == pads
    assert layer["padding_kind"] == padding_kind
    assert layer["padding_mode"] == mode
    own, obs, scale, y = _brute_force(conv, x, pads, mode, reference)
    assert (layer["out_h"], layer["out_w"]) == tuple(y.shape[2:])
    rows = result.neurons.to_pylist()
    assert len(rows) == conv.out_channels
    for row in rows:
        k = row["channel"]
        assert row["scale"] == pytest.approx(float(scale[k]), rel=1e-4)
        for side in SIDES:
            if side in own:
                assert row[f"own_z_{side}"] == pytest.approx(float(own[side][k]), rel=1e-3, abs=1e-4), side
                assert row[f"obs_z_{side}"] == pytest.approx(float(obs[side][k]), rel=1e-3, abs=1e-4), side
            else:
                assert row[f"own_z_{side}"] is None and row[f"obs_z_{side}"] is None


def test_replicate_padding_has_no_own_response():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1, padding_mode="replicate")
    result = detect_pans(conv, torch.rand(4, 3, 12, 12) + 1, tau=1.0)
    own = [row[f"own_z_{s}"] for row in result.neurons.to_pylist() for s in SIDES]
    assert max(abs(v) for v in own) < 1e-5
    assert not any(result.neurons.column("is_pan").to_pylist())


def test_unpadded_and_tiny_layers_are_counted_not_measured():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1),  # no padding: out of scope, counted
        nn.Conv2d(4, 5, 3, padding=1),  # 5x5, interior 3x3: measured
        nn.Conv2d(5, 6, 3, stride=2, padding=1),  # 5x5 -> 3x3, interior 1 position: too few
        nn.Conv2d(6, 7, 3, stride=2, padding=1),  # 3x3 -> 2x2: every position reads padding
    )
    result = detect_pans(model, torch.rand(2, 3, 5, 5), tau=3.0)
    layers = {row["layer"]: row for row in result.layers.to_pylist()}
    assert layers["0"]["in_scope"] is False and layers["0"]["skipped"] == "reads no padding"
    assert layers["1"]["in_scope"] is True and layers["1"]["skipped"] is None
    assert layers["2"]["in_scope"] is True and layers["2"]["skipped"].startswith("interior too small: 1 of")
    assert layers["3"]["in_scope"] is True and layers["3"]["skipped"].startswith("no interior")
    s = result.summary
    assert (s["conv_neurons"], s["padded_neurons"], s["skipped_neurons"]) == (22, 5, 13)
    assert result.neurons.num_rows == 5


def test_weight_standardised_conv_uses_the_weight_it_runs_with():
    """timm's StdConv2d convolves with a standardised weight, not module.weight."""
    from timm.layers import StdConv2d

    torch.manual_seed(0)
    conv = StdConv2d(3, 4, 3, padding=1).eval()
    x = torch.rand(3, 3, 10, 10) + 1
    result = detect_pans(conv, x, tau=3.0)
    w = F.batch_norm(conv.weight.reshape(1, 4, -1), None, None, training=True, momentum=0.0, eps=conv.eps)
    w = w.reshape_as(conv.weight)
    expected = w.sum(dim=1).flatten(1)
    got = torch.tensor(result.neurons.column("kernel").to_pylist())
    assert torch.allclose(got, expected, atol=1e-5)


def test_module_called_twice_gets_two_layer_names():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    result = detect_pans(Twice(), torch.rand(2, 3, 8, 8), tau=3.0)
    assert result.layers.column("layer").to_pylist() == ["conv", "conv@2"]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_scale_is_exact_when_the_mean_dwarfs_the_spread(layout: str):
    """A neuron with a large offset (bias 1e3) and a small spread: a float32 sum of squares would
    lose the spread to cancellation (var = E[x^2] - E[x]^2); the detector must still match a float64
    computation, for both such neurons and ordinary ones in the same layer, in both memory layouts
    (a BatchNorm net is measured channels-last on CPU: its moments take another path)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([1e3, -3e2, 0.0, 0.5]))
    x = torch.rand(6, 3, 30, 30)
    if layout == "channels_last":
        conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    rows = detect_pans(conv, x, tau=3.0, batch_size=4).neurons.to_pylist()
    y = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)[:, :, 1:-1, 1:-1]
    expected = y.std(dim=(0, 2, 3), correction=0)
    for row in rows:
        assert row["scale"] == pytest.approx(float(expected[row["channel"]]), rel=1e-4), row["channel"]
        assert row["interior_mean"] == pytest.approx(float(y[:, row["channel"]].mean()), rel=1e-6)


@pytest.mark.parametrize("arch", ["test_resnet", "test_efficientnet"])
def test_channels_last_layout_measures_what_nchw_measures(arch: str, monkeypatch: pytest.MonkeyPatch):
    # On CPU a BatchNorm net is measured channels-last (pipeline/detect/layout.py); every strip,
    # interior and kernel statistic must read the same numbers as in NCHW (a reduction or index that
    # assumed contiguous NCHW memory would not).
    import timm

    import pipeline.detect.core as core

    def measure(layout: bool) -> tuple[nn.Module, dict]:
        torch.manual_seed(0)
        net = timm.create_model(arch).train()
        with torch.no_grad():  # BatchNorm statistics the net has seen, not the constructed 0 and 1
            for _ in range(3):
                net(torch.randn(8, 3, 64, 64))
        if not layout:
            monkeypatch.setattr(core, "to_fastest_layout", lambda model, device: model)
        result = detect_pans(net, torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1)), device="cpu")
        monkeypatch.undo()
        return net, result.neurons.to_pydict()

    cl_net, cl = measure(layout=True)
    nchw_net, nchw = measure(layout=False)
    convs = [m.weight for m in cl_net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(m.weight.is_contiguous() for m in nchw_net.modules() if isinstance(m, nn.Conv2d))
    assert len(cl["layer"]) == len(nchw["layer"]) > 0
    for col in ("scale", "interior_mean", *(f"{k}_z_{s}" for k in ("own", "obs") for s in SIDES)):
        a = torch.tensor([v if v is not None else float("nan") for v in cl[col]])
        b = torch.tensor([v if v is not None else float("nan") for v in nchw[col]])
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3, equal_nan=True, msg=col)
    assert cl["pan_sides"] == nchw["pan_sides"]


def test_a_net_without_batchnorm_keeps_its_layout():
    # Nets without BatchNorm gain nothing channels-last (convnext, ViTs), and some view their weights
    # as contiguous: detection leaves them as they are.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1))
    detect_pans(net, torch.randn(4, 3, 16, 16), device="cpu")
    assert all(m.weight.is_contiguous() for m in net if isinstance(m, nn.Conv2d))
