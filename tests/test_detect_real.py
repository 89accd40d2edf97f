"""Real trained weights (../shared/models), real timm architectures and a toy CNN trained here, through the detector."""

from __future__ import annotations

import pytest
import timm
import torch

from pipeline.detect import detect_pans
from pipeline.probes import make_probe
from pipeline.sources import Preprocess, load_model
from tests.reference_models import PNet, ResNet20, load_pnet, load_resnet20
from tests.toy_models import DEFAULT_SEED, GROUP_WIDTH, BorderCNN, border_task, trained_border_cnn


@pytest.mark.shared_models
def test_pnet_has_no_padding_but_every_conv_neuron_counted(shared_models):
    model = load_pnet(shared_models)
    x = make_probe("photos", 4, Preprocess.from_cfg(PNet.pretrained_cfg))
    result = detect_pans(model, x)
    assert result.summary["conv_neurons"] == 10 + 16 + 32 + 2 + 4
    assert result.summary["padded_neurons"] == 0 and result.neurons.num_rows == 0
    assert result.layers.num_rows == 5 and not any(result.layers.column("in_scope").to_pylist())


@pytest.mark.shared_models
@pytest.mark.slow
def test_efficientnet_lite0_trained_has_pans_in_the_papers_range(shared_models):
    loaded = load_model(f"local-dir:{shared_models / 'tf_efficientnet_lite0.in1k'}")
    x = make_probe("photos", 8, loaded.preprocess)
    result = detect_pans(loaded.model, x, tau=3.0)
    s = result.summary
    # "From dozens to hundreds" per model, roughly 2% of filters: a sanity range, not a target.
    assert 12 <= s["pans"] <= 1000, s["pans"]
    assert 0.002 <= s["pans"] / s["padded_neurons"] <= 0.10
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
    x = make_probe("photos", 8, Preprocess.from_cfg(ResNet20.pretrained_cfg))
    for trained in (True, False):
        torch.manual_seed(0)
        result = detect_pans(load_resnet20(shared_models, trained), x)
        assert result.summary["conv_neurons"] == 688 == result.summary["padded_neurons"]
        assert result.summary["dead_neurons"] == 0


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

    conv1 PANs: found in both, the 8 filters of the constant input plane (channels 8-15). Their
    interior scale is only the plane's faint noise (std 0.05) while the zero padding steps the
    plane from 1 to 0, so any filter there has |own_z| near 20 whatever its weights: on this toy
    conv1's PAN count does not tell trained from fresh (seeds 0-5: 8 PANs against 8 every time).
    What training changes is what the deeper layers make of the border. Measured on seeds 0-5
    (one-thread training, as train_border_cnn does): border-informed neurons (|obs_z| >= tau, not
    PANs) in conv2 + conv3, trained 8-38 vs fresh 0-6, trained ahead by 2 or more on every seed
    (seed 1: 8 vs 6); conv2's largest |obs_z|, trained 6.6-23.3 vs fresh 2.0-4.3, ratio 1.61-5.42
    (seed 1: 2.17). Asserted: trained border-informed >= 8 and >= fresh + 2; trained max conv2
    |obs_z| >= 1.4x fresh.
    """
    seed = DEFAULT_SEED
    probe, _ = border_task(64, seed=7)
    trained = _toy_layers(trained_border_cnn(seed), probe)
    torch.manual_seed(seed)  # the same initialisation train_border_cnn starts from
    fresh = _toy_layers(BorderCNN().eval(), probe)
    for layers in (trained, fresh):
        pans = [r["channel"] for r in layers["conv1"] if r["is_pan"]]
        assert pans == list(range(GROUP_WIDTH, 2 * GROUP_WIDTH)), pans

    def informed(layers: dict[str, list[dict]]) -> int:
        return sum(r["border_informed"] for r in layers["conv2"] + layers["conv3"])

    def max_obs(layers: dict[str, list[dict]]) -> float:
        return max(r["max_abs_obs_z"] for r in layers["conv2"] if not r["dead"])

    assert informed(trained) >= 8 and informed(trained) >= informed(fresh) + 2, (informed(trained), informed(fresh))
    assert max_obs(trained) >= 1.4 * max_obs(fresh), (max_obs(trained), max_obs(fresh))
