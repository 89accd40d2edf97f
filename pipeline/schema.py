"""Arrow schemas of every results table: the one place that defines them.

Every writer (the detector, the survey, impact experiments) builds its tables with these
schemas, and the analysis layer reads them back with DuckDB. Columns may be added over time;
readers use ``union_by_name`` so older result folders keep working. Never rename a column.

Key columns shared by all tables:
- ``model_id``: the canonical spec of the model (e.g. ``timm:resnet50.a1_in1k``).
- ``config_id``: a short hash of the detection settings that produced the row (probe, image
  count and size, tau, reference, detector version). Resume and cross-run queries key on
  ``(model_id, config_id)``; the full settings live in the ``runs`` table.
"""

from __future__ import annotations

import pyarrow as pa

SIDES: tuple[str, ...] = ("top", "bottom", "left", "right")

_f32 = pa.float32()
_f64 = pa.float64()
_i32 = pa.int32()
_i64 = pa.int64()
_str = pa.string()
_bool = pa.bool_()
_ts = pa.timestamp("us", tz="UTC")


def _per_side(prefix: str, dtype: pa.DataType) -> list[pa.Field]:
    return [pa.field(f"{prefix}_{side}", dtype) for side in SIDES]


NEURONS = pa.schema(
    [
        pa.field("model_id", _str, nullable=False),
        pa.field("config_id", _str, nullable=False),
        pa.field("layer", _str, nullable=False),
        pa.field("layer_index", _i32, nullable=False),
        pa.field("channel", _i32, nullable=False),
        # own_z: this layer's padding response (mean over side-s strip positions, those that
        # read side s's padding and no other side's, of the output with the layer's padding
        # minus the output with the reference padding), divided by scale. NULL for a side
        # whose strip is empty.
        *_per_side("own_z", _f32),
        # obs_z: observed border contrast (mean over side-s strip minus interior mean) / scale.
        *_per_side("obs_z", _f32),
        # kmass: kernel weight on padded taps for each side, averaged over that side's strip
        # positions and summed over input channels (the "kernel view").
        *_per_side("kmass", _f32),
        pa.field("scale", _f32),  # std of the output over interior positions and the batch
        pa.field("interior_mean", _f32),
        pa.field("max_abs_own_z", _f32),
        pa.field("max_abs_obs_z", _f32),
        pa.field("dead", _bool),  # interior output (nearly) constant: z-scores meaningless
        pa.field("is_pan", _bool),
        pa.field("pan_sides", _str),  # e.g. "top", "top+left", "top+bottom", "all"; NULL if not a PAN
        pa.field("pan_sign", _str),  # "excited", "inhibited", "mixed"; NULL if not a PAN
        pa.field("border_informed", _bool),  # obs_z >= tau while own_z < tau
        pa.field("kernel", pa.list_(_f32)),  # kernel summed over input channels, row-major kh*kw
        # Which PAN rule classified the row (pipeline/detect/classify.py): "constant" (zeros or
        # constant padding: is_pan from own_z), "measured_only" (reflect, replicate, circular:
        # z-scores stored, never a PAN). NULL: written before detector 1.2, every mode counted.
        pa.field("pan_rule", _str),
    ]
)

LAYERS = pa.schema(
    [
        pa.field("model_id", _str, nullable=False),
        pa.field("config_id", _str, nullable=False),
        pa.field("layer", _str, nullable=False),
        pa.field("layer_index", _i32, nullable=False),
        pa.field("relative_depth", _f32),  # layer_index / (number of conv layers - 1)
        pa.field("module_type", _str),  # class name of the module, e.g. Conv2d, Conv2dSame
        pa.field("conv_type", _str),  # standard | depthwise | grouped
        pa.field("in_channels", _i32),
        pa.field("out_channels", _i32),
        pa.field("groups", _i32),
        pa.field("kernel_h", _i32),
        pa.field("kernel_w", _i32),
        pa.field("stride_h", _i32),
        pa.field("stride_w", _i32),
        pa.field("dilation_h", _i32),
        pa.field("dilation_w", _i32),
        *_per_side("pad", _i32),  # declared padding per side, all sources of padding together
        # padding_kind: none | symmetric | asymmetric | same | dynamic_same | explicit
        pa.field("padding_kind", _str),
        pa.field("padding_mode", _str),  # zeros | constant | reflect | replicate | circular
        pa.field("in_h", _i32),  # input size before any padding
        pa.field("in_w", _i32),
        pa.field("out_h", _i32),
        pa.field("out_w", _i32),
        *_per_side("strip", _i32),  # output rows/cols that actually read that side's padding
        pa.field("in_scope", _bool),  # reads padding somewhere
        pa.field("skipped", _str),  # NULL when measured, else why not
        pa.field("pans", _i32),
    ]
)

MODELS = pa.schema(
    [
        pa.field("model_id", _str, nullable=False),
        pa.field("config_id", _str, nullable=False),
        pa.field("run_id", _str),
        pa.field("source", _str),
        pa.field("architecture", _str),
        pa.field("pretrained_tag", _str),
        pa.field("pretrained", _bool),  # False: randomly initialised weights (untrained)
        pa.field("revision", _str),  # resolved hub commit / file revision, when known
        pa.field("weights_sha256", _str),
        pa.field("num_params", _i64),
        pa.field("conv_layers", _i32),
        pa.field("conv_neurons", _i64),  # all conv output channels
        pa.field("padded_layers", _i32),
        pa.field("padded_neurons", _i64),  # measured neurons of convs that read padding
        pa.field("skipped_neurons", _i64),  # in scope but not measurable (e.g. no interior)
        pa.field("pans", _i64),
        pa.field("dead_neurons", _i64),
        pa.field("border_informed", _i64),
        pa.field("probe", _str),
        pa.field("num_images", _i32),
        pa.field("image_h", _i32),
        pa.field("image_w", _i32),
        pa.field("mean", pa.list_(_f32)),
        pa.field("std", pa.list_(_f32)),
        pa.field("interpolation", _str),
        pa.field("crop_pct", _f32),
        pa.field("tau", _f32),
        pa.field("reference", _str),
        pa.field("detector_version", _str),
        pa.field("device", _str),
        pa.field("versions", _str),  # JSON: library versions
        pa.field("load_seconds", _f32),
        pa.field("detect_seconds", _f32),
        # The null twin (pipeline/null_twin.py): the same architecture untrained, recalibrated on the
        # probe. Its neuron rows are in null_neurons under model_id = null_model_id. NULL: not measured
        # (--no-null, a --random-init model, which is its own null, or a folder older than the twin).
        pa.field("null_model_id", _str),
        pa.field("null_pans", _i64),
        pa.field("null_padded_neurons", _i64),
        # How normalisation was refitted to the probe: of the twin (null_recalibration) and, for a
        # --random-init model, of the model itself (recalibration): running_stats | lsuv | none.
        pa.field("null_recalibration", _str),
        pa.field("recalibration", _str),
        pa.field("null_seconds", _f32),
        pa.field("top1", _f32),  # ImageNet top-1 from the model's metadata, when known
        pa.field("license", _str),
        pa.field("created_at", _ts),
    ]
)

FAILURES = pa.schema(
    [
        pa.field("model_id", _str, nullable=False),
        pa.field("config_id", _str, nullable=False),
        pa.field("run_id", _str),
        pa.field("stage", _str),  # resolve | fetch | load | detect | impact | timeout
        pa.field("error_type", _str),
        pa.field("message", _str),
        pa.field("attempt", _i32),
        pa.field("created_at", _ts),
    ]
)

RUNS = pa.schema(
    [
        pa.field("run_id", _str, nullable=False),
        pa.field("config_id", _str, nullable=False),
        pa.field("command", _str),
        pa.field("specs", pa.list_(_str)),
        pa.field("config_json", _str),  # every setting the run used, as JSON
        pa.field("versions", _str),  # JSON: library versions
        pa.field("git_revision", _str),
        pa.field("started_at", _ts),
    ]
)

IMPACT = pa.schema(
    [
        pa.field("model_id", _str, nullable=False),
        pa.field("config_id", _str, nullable=False),
        pa.field("experiment", _str),  # ablation | control | padding | border_distance
        pa.field("condition", _str),  # e.g. pan_ablation, random_control, reflect
        pa.field("seed", _i32),
        pa.field("metric", _str),  # top1_agreement | kl | accuracy | ...
        pa.field("value", _f64),
        pa.field("impact_id", _str),  # hash of the impact settings (image set, controls, seed, ...)
    ]
)

#: Per-class prediction shifts under each impact condition (pipeline/impact, docs/impact.md).
IMPACT_CLASSES = pa.schema(
    [
        pa.field("model_id", _str, nullable=False),
        pa.field("config_id", _str, nullable=False),
        pa.field("impact_id", _str),
        pa.field("experiment", _str),  # ablation | control | padding
        pa.field("condition", _str),  # pan_ablation | random_control | reflect | replicate | circular
        pa.field("seed", _i32),
        pa.field("class_index", _i32),
        pa.field("class_name", _str),  # NULL when the model has no class names
        pa.field("intact_count", _i32),  # images the intact model predicts as this class (top-1)
        pa.field("condition_count", _i32),  # ... and the model under the condition
        pa.field("count_delta", _i32),
        pa.field("intact_prob", _f64),  # mean probability of this class over the image set
        pa.field("condition_prob", _f64),
        pa.field("prob_delta", _f64),
    ]
)

#: Confidence in a pasted patch's class against its distance to the nearest border.
IMPACT_BORDER = pa.schema(
    [
        pa.field("model_id", _str, nullable=False),
        pa.field("config_id", _str, nullable=False),
        pa.field("impact_id", _str),
        pa.field("condition", _str),  # intact | pan_ablation | random_control
        pa.field("distance_px", _i32),  # pixels from the patch to the nearest image border
        pa.field("distance_frac", _f32),  # distance_px / the largest distance on the grid (1 = centred)
        pa.field("samples", _i32),  # patch placements averaged
        pa.field("confidence", _f64),  # mean probability of the patch's class
        pa.field("confidence_std", _f64),
        pa.field("hit_rate", _f64),  # share of placements whose top-1 is the patch's class
    ]
)

#: Every table of a results folder, by sub-folder name.
TABLES: dict[str, pa.Schema] = {
    "neurons": NEURONS,
    "null_neurons": NEURONS,  # the null twins' neurons (model_id = models.null_model_id)
    "layers": LAYERS,
    "models": MODELS,
    "failures": FAILURES,
    "runs": RUNS,
    "impact": IMPACT,
    "impact_classes": IMPACT_CLASSES,
    "impact_border": IMPACT_BORDER,
}


def register_table(name: str, schema: pa.Schema) -> None:
    """Add a table that an extension writes (an impact experiment's own table) to :data:`TABLES`."""
    if name in TABLES and not TABLES[name].equals(schema):
        raise ValueError(f"table {name!r} is already defined with another schema")
    TABLES[name] = schema


def table_from_rows(name: str, rows: list[dict]) -> pa.Table:
    """Build a table of ``name`` from row dicts; missing keys become NULL, unknown keys fail."""
    schema = TABLES[name]
    unknown = {key for row in rows for key in row} - set(schema.names)
    if unknown:
        raise KeyError(f"columns not in the {name} schema: {sorted(unknown)}")
    columns = {field.name: [row.get(field.name) for row in rows] for field in schema}
    return pa.Table.from_pydict(columns, schema=schema)
