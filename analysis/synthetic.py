"""Schema-true synthetic results folders, for tests and benchmarks of the analysis layer.

Not a model of real PANs: random z-scores with a planted heavy tail, classified with the
detector's own rule (pipeline.detect.classify.classify), so every statistic has something to count.
Families, depths, kernels, strides, dilations and padding kinds vary so that every canned
table has several rows. Some sides are NULL (empty border strip) or NaN, some neurons are dead,
some models lack num_params or top1, and a few models fail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.detect.classify import classify, pan_rule
from pipeline.schema import SIDES, TABLES, table_from_rows
from pipeline.store import ResultStore, file_key

ARCHITECTURES: tuple[str, ...] = (
    "resnet50",
    "resnet18",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mobilenetv3_large_100",
    "vgg16_bn",
    "convnext_tiny",
    "regnety_040",
)
#: (kernel_h, kernel_w, stride, dilation, padding_kind, padding_mode, conv_type)
LAYER_KINDS: tuple[tuple, ...] = (
    (3, 3, 1, 1, "symmetric", "zeros", "standard"),
    (3, 3, 2, 1, "symmetric", "zeros", "standard"),
    (3, 3, 1, 1, "symmetric", "zeros", "depthwise"),
    (5, 5, 2, 1, "dynamic_same", "zeros", "depthwise"),
    (7, 7, 2, 1, "symmetric", "zeros", "standard"),
    (3, 3, 1, 2, "symmetric", "zeros", "standard"),
    (3, 3, 2, 1, "asymmetric", "constant", "grouped"),
    (3, 3, 1, 1, "symmetric", "reflect", "standard"),
)
CONFIG_ID = "cfgsynthetic"
TAU = 3.0


def _kernel_list(kernels: np.ndarray) -> pa.Array:
    """(n, kh, kw) kernels as a list<float32> column, row-major."""
    n = len(kernels)
    size = int(np.prod(kernels.shape[1:]))
    offsets = np.arange(n + 1, dtype=np.int32) * size
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(kernels.reshape(-1), pa.float32()))


def model_tables(
    index: int, architecture: str, neurons: int, rng: np.random.Generator, *, config_id: str = CONFIG_ID
) -> dict[str, pa.Table]:
    """neurons, layers and models tables of one synthetic model with about ``neurons`` neuron rows."""
    model_id = f"timm:{architecture}.synthetic_{index}"
    n_layers = int(rng.integers(12, 40))
    weights = rng.dirichlet(np.ones(n_layers))
    channels = np.maximum(1, np.round(weights * neurons)).astype(int)
    channels[-1] = max(1, neurons - int(channels[:-1].sum()))
    pan_rate = 0.01 + 0.06 * rng.random()  # per model, so models differ
    layer_rows, parts = [], []
    for li in range(n_layers):
        kh, kw, stride, dil, pkind, pmode, ctype = LAYER_KINDS[int(rng.integers(len(LAYER_KINDS)))]
        c = int(channels[li])
        depth = li / max(1, n_layers - 1)
        own = rng.standard_normal((c, 4)).astype(np.float32)
        obs = (own + rng.standard_normal((c, 4))).astype(np.float32)
        # Planted PANs, more in shallow layers: one to four sides far out, with a sign.
        planted = rng.random(c) < pan_rate * (1.5 - depth)
        for i in np.flatnonzero(planted):
            k = int(rng.choice([1, 1, 1, 2, 2, 4]))
            chosen = rng.choice(4, size=k, replace=False)
            own[i, chosen] = rng.choice([-1.0, 1.0]) * rng.uniform(3.2, 40.0, size=k)
        obs = np.where(planted[:, None], own + rng.standard_normal((c, 4)), obs).astype(np.float32)  # own shows
        informed = (~planted) & (rng.random(c) < 0.05)
        obs[informed, int(rng.integers(4))] = 8.0
        if stride == 2 and rng.random() < 0.5:  # an even input: one side's strip is empty
            own[:, 1] = np.nan
            obs[:, 1] = np.nan
        dead = rng.random(c) < 0.01
        own[dead] *= 1000.0  # what a tiny scale does to z; the rule must ignore it
        rule = pan_rule(pmode)
        cls = classify(own, obs, dead, TAU, rule)
        kernels = (rng.standard_normal((c, kh, kw)) * 0.1).astype(np.float32)
        kmass = np.stack(
            [kernels[:, 0].sum(1), kernels[:, -1].sum(1), kernels[:, :, 0].sum(1), kernels[:, :, -1].sum(1)], 1
        )
        own_cols = {f"own_z_{s}": own[:, j] for j, s in enumerate(SIDES)}
        # A few NULL sides (as the detector writes for an empty strip) next to the NaN ones.
        null_mask = np.zeros(c, bool) if li % 5 else rng.random(c) < 0.2
        own_cols["own_z_left"] = pa.array(own[:, 2], mask=null_mask)
        part = {
            "model_id": [model_id] * c,
            "config_id": [config_id] * c,
            "layer": [f"features.{li}.conv"] * c,
            "layer_index": np.full(c, li, np.int32),
            "channel": np.arange(c, dtype=np.int32),
            **own_cols,
            **{f"obs_z_{s}": obs[:, j] for j, s in enumerate(SIDES)},
            **{f"kmass_{s}": kmass[:, j].astype(np.float32) for j, s in enumerate(SIDES)},
            "scale": np.where(dead, 1e-9, rng.uniform(0.5, 2.0, c)).astype(np.float32),
            "interior_mean": rng.standard_normal(c).astype(np.float32),
            "max_abs_own_z": np.nanmax(np.abs(own), axis=1).astype(np.float32),
            "max_abs_obs_z": np.nanmax(np.abs(obs), axis=1).astype(np.float32),
            "dead": dead,
            **cls,
            "kernel": _kernel_list(kernels),
        }
        # Re-classify with the left side NULL where it is NULL (the detector never saw it).
        own_nulled = own.copy()
        own_nulled[null_mask, 2] = np.nan
        part.update(classify(own_nulled, obs, dead, TAU, rule))
        parts.append(pa.table(part))
        layer_rows.append(
            {
                "model_id": model_id,
                "config_id": config_id,
                "layer": f"features.{li}.conv",
                "layer_index": li,
                "relative_depth": depth,
                "module_type": "Conv2d",
                "conv_type": ctype,
                "in_channels": c,
                "out_channels": c,
                "groups": c if ctype == "depthwise" else 1,
                "kernel_h": kh,
                "kernel_w": kw,
                "stride_h": stride,
                "stride_w": stride,
                "dilation_h": dil,
                "dilation_w": dil,
                **{f"pad_{s}": kh // 2 * dil for s in SIDES},
                "padding_kind": pkind,
                "padding_mode": pmode,
                "in_h": 56,
                "in_w": 56,
                "out_h": 56 // stride,
                "out_w": 56 // stride,
                **{f"strip_{s}": 1 for s in SIDES},
                "in_scope": True,
                "skipped": None,
                "pans": int(np.sum(part["is_pan"])),
            }
        )
    neurons_table = pa.concat_tables(
        [p.cast(TABLES["neurons"]) for p in (t.select(TABLES["neurons"].names) for t in parts)]
    )
    layers = table_from_rows("layers", layer_rows)
    padded = neurons_table.num_rows
    out_of_scope = int(rng.integers(0, 200))  # 1x1 convs without padding: counted, not measured
    model_row = {
        "model_id": model_id,
        "config_id": config_id,
        "run_id": "run-synthetic",
        "source": "timm",
        "architecture": architecture,
        "pretrained_tag": f"synthetic_{index}",
        "pretrained": True,
        "num_params": None if index % 7 == 3 else int(10 ** rng.uniform(6, 8.4)),
        "conv_layers": n_layers + 3,
        "conv_neurons": padded + out_of_scope,
        "padded_layers": n_layers,
        "padded_neurons": padded,
        "skipped_neurons": 0,
        "pans": int(pa.compute.sum(neurons_table["is_pan"].cast(pa.int64())).as_py() or 0),
        "dead_neurons": int(pa.compute.sum(neurons_table["dead"].cast(pa.int64())).as_py() or 0),
        "probe": "synthetic",
        "num_images": 8,
        "image_h": 224,
        "image_w": 224,
        "tau": TAU,
        "reference": "channel_mean",
        "detector_version": "synthetic",
        "top1": None if index % 5 == 2 else float(rng.uniform(65, 88)),
        "created_at": datetime(2025, 1, 1, tzinfo=UTC),
    }
    return {"neurons": neurons_table, "layers": layers, "models": table_from_rows("models", [model_row])}


def build_folder(
    root: str | Path, *, models: int = 8, neurons_per_model: int = 300, failures: int = 2, seed: int = 0
) -> ResultStore:
    """Write a synthetic results folder: ``models`` finished models, ``failures`` failed ones, one run."""
    rng = np.random.default_rng(seed)
    store = ResultStore(root)
    store.ensure()
    for i in range(models):
        arch = ARCHITECTURES[i % len(ARCHITECTURES)]
        tables = model_tables(i, arch, neurons_per_model, rng)
        store.write_model(tables, file_key(tables["models"]["model_id"][0].as_py(), CONFIG_ID))
    for j in range(failures):
        model_id = f"timm:broken_net{j}.synthetic"
        row = {
            "model_id": model_id,
            "config_id": CONFIG_ID,
            "run_id": "run-synthetic",
            "stage": ["load", "detect"][j % 2],
            "error_type": ["ModelLoadError", "RuntimeError"][j % 2],
            "message": f"synthetic failure number {j}",
            "attempt": 1,
            "created_at": datetime(2025, 1, 1, tzinfo=UTC),
        }
        store.write("failures", file_key(model_id, CONFIG_ID), table_from_rows("failures", [row]))
    run = {
        "run_id": "run-synthetic",
        "config_id": CONFIG_ID,
        "command": "synthetic",
        "specs": ["timm:*"],
        "config_json": "{}",
        "versions": "{}",
        "started_at": datetime(2025, 1, 1, tzinfo=UTC),
    }
    store.write("runs", "run-synthetic", table_from_rows("runs", [run]))
    return store
