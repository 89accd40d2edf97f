"""Real trained weights (../shared/models) and real timm architectures through the detector."""

from __future__ import annotations

import pytest
import timm
import torch

from pipeline.detect import detect_pans
from pipeline.probes import make_probe
from pipeline.sources import Preprocess, load_model
from tests.reference_models import PNet, ResNet20, load_pnet, load_resnet20


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
