"""The architecture family rule (docs/analysis.md)."""

from __future__ import annotations

import pytest

from analysis.families import family


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet50", "resnet"),
        ("resnet50d", "resnet"),
        ("timm:resnet50.a1_in1k", "resnet"),
        ("hf-hub:timm/resnet18.a1_in1k", "resnet"),
        ("efficientnet_b0", "efficientnet"),
        ("tf_efficientnet_lite0", "efficientnet_lite"),
        ("tf_efficientnet_lite0.in1k", "efficientnet_lite"),
        ("efficientnetv2_rw_s", "efficientnetv2"),
        ("tf_efficientnetv2_s", "efficientnetv2"),
        ("mobilenetv3_large_100", "mobilenetv3"),
        ("mobilenet_v3_large", "mobilenetv3"),  # torchvision spelling meets timm's
        ("mobilenetv4_conv_small", "mobilenetv4"),
        ("wide_resnet50_2", "wide_resnet"),
        ("regnetx_002", "regnetx"),
        ("vgg16_bn", "vgg"),
        ("convnext_tiny", "convnext"),
        ("dla60x", "dla"),
        ("res2net50_26w_4s", "res2net"),
        ("cs3darknet_m", "cs3darknet"),
        ("legacy_xception", "xception"),
        ("eca_nfnet_l0", "eca_nfnet"),
        ("shufflenet_v2_x1_0", "shufflenetv2"),
        ("alexnet", "alexnet"),
    ],
)
def test_family(name: str, expected: str) -> None:
    assert family(name) == expected


def test_empty_names() -> None:
    assert family(None) is None
    assert family("") is None


def test_family_in_sql(tmp_path) -> None:
    import analysis
    from pipeline.schema import table_from_rows
    from pipeline.store import ResultStore

    store = ResultStore(tmp_path)
    store.ensure()
    rows = [
        {"model_id": "timm:tf_efficientnet_lite0.in1k", "config_id": "c", "architecture": "tf_efficientnet_lite0"},
        {"model_id": "local-dir:/x/wide_resnet50_2", "config_id": "c", "architecture": None},
    ]
    store.write("models", "k", table_from_rows("models", rows))
    con = analysis.open(tmp_path)
    got = dict(con.sql("SELECT model_id, family FROM models").fetchall())
    assert got == {
        "timm:tf_efficientnet_lite0.in1k": "efficientnet_lite",
        "local-dir:/x/wide_resnet50_2": "wide_resnet",
    }
    assert con.sql("SELECT pan_family('resnet152')").fetchall() == [("resnet",)]
