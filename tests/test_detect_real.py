"""Real trained weights (../shared/models), real timm architectures and a toy CNN trained here, through the detector."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.layers import Conv2dSame

from pipeline.detect import detect_pans
from pipeline.detect.classify import classify
from pipeline.detect.geometry import same_padding
from pipeline.probes import make_probe
from pipeline.schema import SIDES
from pipeline.sources import Preprocess, load_model
from tests.reference_models import PNet, ResNet20, load_pnet, load_resnet20
from tests.test_detect_exact import _brute_force
from tests.toy_models import DEFAULT_SEED, GROUP_WIDTH, BorderCNN, border_task, trained_border_cnn


@pytest.mark.shared_models
def test_pnet_has_no_padding_but_every_conv_neuron_counted(shared_models):
    model = load_pnet(shared_models)
    x = make_probe("photos", 4, Preprocess.from_cfg(PNet.pretrained_cfg))
    result = detect_pans(model, x)
    assert result.summary["conv_neurons"] == 10 + 16 + 32 + 2 + 4
    assert result.summary["padded_neurons"] == 0 and result.neurons.num_rows == 0
    assert result.layers.num_rows == 5 and not any(result.layers.column("in_scope").to_pylist())


def _brute_force_lite0(model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """own, obs, scale of every padded conv of the model, from whole maps with two full convolutions
    per layer (tests/test_detect_exact.py's reference), on the inputs each conv really receives."""
    inputs: dict[str, torch.Tensor] = {}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0])) for n, m in convs.items()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    out = {}
    for name, conv in convs.items():
        xi = inputs[name]
        if isinstance(conv, Conv2dSame):
            (t, b), (left, r) = (same_padding(xi.shape[d], conv.kernel_size[d - 2], conv.stride[d - 2],
                                              conv.dilation[d - 2]) for d in (2, 3))
        else:
            t = b = conv.padding[0]
            left = r = conv.padding[1]
        if (t, b, left, r) == (0, 0, 0, 0):
            continue
        with torch.no_grad():
            out[name] = _brute_force(conv, xi, (t, b, left, r), "zeros", "replicate")[:3]
    return out


@pytest.mark.shared_models
@pytest.mark.slow
def test_efficientnet_lite0_pans_match_a_brute_force_recount(shared_models):
    """The trained Lite0 through the detector, against own_z recomputed layer by layer with whole-map
    convolutions: every neuron's own_z agrees, so the PAN count is the rule's count on exact
    numbers, not a number in a wide sanity range. Catches any error of the strip arithmetic that
    shows only on a real network (dynamic TF SAME pads, depthwise layers, explicit pads)."""
    loaded = load_model(f"local-dir:{shared_models / 'tf_efficientnet_lite0.in1k'}")
    x = make_probe("photos", 8, loaded.preprocess)
    result = detect_pans(loaded.model, x, tau=3.0, device="cpu")
    s = result.summary
    reference = _brute_force_lite0(loaded.model, x)
    rows = result.neurons.to_pylist()
    measured = {r["layer"] for r in rows}
    assert measured <= set(reference) and len(measured) >= 15
    own_ref = np.full((len(rows), 4), np.nan)
    worst = 0.0
    for i, r in enumerate(rows):
        own = reference[r["layer"]][0]
        k = r["channel"]
        for j, side in enumerate(SIDES):
            if side in own:
                own_ref[i, j] = float(own[side][k])
                if not r["dead"]:  # a dead neuron's z is 0/0 in the reference
                    worst = max(worst, abs(r[f"own_z_{side}"] - own_ref[i, j]) / (1.0 + abs(own_ref[i, j])))
            else:
                assert r[f"own_z_{side}"] is None, (r["layer"], side)
    assert worst < 2e-3, worst
    dead = np.array([r["dead"] for r in rows])
    recount = classify(own_ref, np.zeros_like(own_ref), dead, 3.0)["is_pan"]
    got = np.array([r["is_pan"] for r in rows])
    borderline = np.abs(np.nan_to_num(np.abs(own_ref)).max(axis=1) - 3.0) < 1e-2
    assert np.all((recount == got) | borderline)
    assert s["pans"] == int(got.sum()) > 0
    assert result.neurons.num_rows == s["padded_neurons"]
    layers = result.layers.to_pylist()
    same = [r for r in layers if r["module_type"] == "Conv2dSame"]
    assert len(same) == 5
    for r in same:  # stride 2 at even sizes: TF SAME pads bottom and right only
        assert r["padding_kind"] == "dynamic_same"
        assert r["pad_bottom"] == r["pad_top"] + 1 and r["pad_right"] == r["pad_left"] + 1
        assert r["strip_bottom"] >= 1 and r["strip_right"] >= 1
        if r["kernel_h"] == 3:
            assert (r["pad_top"], r["strip_top"], r["pad_left"], r["strip_left"]) == (0, 0, 0, 0)


@pytest.mark.shared_models
def test_resnet20_trained_and_fresh_are_measured_alike(shared_models):
    """Same architecture, two weight sets: the detector must find the same layers with the same
    geometry and neurons in both (that depends on the architecture only), and measure each with its
    own weights. Catches state carried from one model to the next (weights or layer infos cached by
    layer name) and geometry that depends on weight values."""
    x = make_probe("photos", 8, Preprocess.from_cfg(ResNet20.pretrained_cfg))
    results = {}
    for trained in (True, False):
        torch.manual_seed(0)
        model = load_resnet20(shared_models, trained)
        results[trained] = (model, detect_pans(model, x))
    (_, t), (_, f) = results[True], results[False]
    geometry = [c for c in t.layers.column_names if c != "pans"]
    assert t.layers.select(geometry).equals(f.layers.select(geometry))
    assert t.neurons.select(["layer", "channel"]).equals(f.neurons.select(["layer", "channel"]))
    for model, result in results.values():
        assert result.summary["conv_neurons"] == 688 == result.summary["padded_neurons"]
        assert result.summary["dead_neurons"] == 0
        convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
        kernels = torch.tensor(result.neurons.column("kernel").to_pylist())
        expected = torch.cat([convs[layer].weight.sum(dim=1).flatten(1) for layer in
                              dict.fromkeys(result.neurons.column("layer").to_pylist())])
        assert torch.allclose(kernels, expected, atol=1e-5)
    own_t = np.array(t.neurons.column("max_abs_own_z").to_pylist(), dtype=float)
    own_f = np.array(f.neurons.column("max_abs_own_z").to_pylist(), dtype=float)
    assert not np.allclose(own_t, own_f, rtol=0.05)  # different weights, different responses


def test_timm_architecture_layer_discovery_matches_its_modules():
    """Every Conv2d of a timm model is found, in order, and counted."""
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    result = detect_pans(model, torch.randn(2, 3, 64, 64), tau=3.0)
    assert result.layers.column("layer").to_pylist() == [n for n, _ in convs]
    assert result.summary["conv_neurons"] == sum(m.out_channels for _, m in convs)
    padded = sum(m.out_channels for _, m in convs if m.padding != (0, 0))
    assert result.summary["padded_neurons"] + result.summary["skipped_neurons"] == padded
    assert result.summary["skipped_neurons"] > 0  # layer4 is 2x2 at 64 px: no interior, skipped


def _toy_layers(model: torch.nn.Module, probe: torch.Tensor) -> dict[str, list[dict]]:
    rows = detect_pans(model, probe, tau=3.0, device="cpu").neurons.to_pylist()
    return {layer: [r for r in rows if r["layer"] == layer] for layer in ("conv1", "conv2", "conv3")}


@pytest.mark.slow
def test_trained_toy_has_pans_and_carries_the_border_further_than_fresh_init():
    """The tiny border CNN of tests/toy_models.py, trained here (~10 s), against the same architecture
    freshly initialised with the same seed, both measured on the same border-task probe.

    conv1 (zero padding) PANs: found in both, the 8 filters of the constant input plane (channels
    8-15), whose interior scale is only the plane's faint noise: any weights give a large |own_z|
    there, so on this toy conv1's count does not tell trained from fresh. conv2 and conv3 are
    circular-padded: measured, never PANs (detector 1.2). What training changes is how far the
    border signal travels. Measured with detector 1.2 on seeds 0-5 (one-thread training, as
    train_border_cnn does): conv2's largest |obs_z|, trained 5.97-21.86 vs fresh 1.99-4.28, ratio
    1.74-5.11 (seed 1: 9.00 vs 3.63, 2.48); border-informed neurons in conv2 + conv3, trained
    11-55 vs fresh 0-8, ahead by 3 or more on every seed (seed 1: 11 vs 8). Asserted: the ratio
    >= 1.5 (below every seed's), and trained informed > fresh. A detector that measured both
    models with one set of weights, or took obs_z from the wrong positions, fails the ratio.
    """
    seed = DEFAULT_SEED
    probe, _ = border_task(64, seed=7)
    trained = _toy_layers(trained_border_cnn(seed), probe)
    torch.manual_seed(seed)  # the same initialisation train_border_cnn starts from
    fresh = _toy_layers(BorderCNN().eval(), probe)
    for layers in (trained, fresh):
        pans = [r["channel"] for r in layers["conv1"] if r["is_pan"]]
        assert pans == list(range(GROUP_WIDTH, 2 * GROUP_WIDTH)), pans
        assert {r["pan_rule"] for r in layers["conv2"] + layers["conv3"]} == {"measured_only"}
        assert not any(r["is_pan"] for r in layers["conv2"] + layers["conv3"])

    def informed(layers: dict[str, list[dict]]) -> int:
        return sum(r["border_informed"] for r in layers["conv2"] + layers["conv3"])

    def max_obs(layers: dict[str, list[dict]]) -> float:
        return max(r["max_abs_obs_z"] for r in layers["conv2"] if not r["dead"])

    assert max_obs(trained) >= 1.5 * max_obs(fresh), (max_obs(trained), max_obs(fresh))
    assert informed(trained) > informed(fresh), (informed(trained), informed(fresh))
