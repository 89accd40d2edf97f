"""One model, end to end, in-process: load, build its probe, detect, produce its table rows.

Used by ``pans detect`` directly and by each survey task on Ray. Writes nothing itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from pipeline.detect import detect_pans
from pipeline.detect.core import resolve_device
from pipeline.errors import PanSurveyError
from pipeline.null_twin import MeasuredBeside, fitted_to_probe
from pipeline.null_twin import measure_null as measure_null_twin
from pipeline.probes import make_probe, probe_label
from pipeline.schema import table_from_rows
from pipeline.settings import DetectSettings
from pipeline.sources import LoadedModel, ModelRef, load_model, null_model_id
from pipeline.version import DETECTOR_VERSION, library_versions_json

#: Looks a null twin up by its id where results are kept: its (PANs, padded neurons), or None.
StoredNull = Callable[[str], tuple[int, int] | None]


def detect_loaded(
    loaded: LoadedModel,
    settings: DetectSettings,
    *,
    load_seconds: float = 0.0,
    run_id: str | None = None,
    fetched: dict[str, Any] | None = None,
    measure_null: bool = True,
    stored_null: StoredNull | None = None,
) -> dict[str, pa.Table]:
    """Detect PANs in an already loaded model; returns the neurons, layers and models tables.

    With ``settings.null`` a trained model also gets its null twin (:mod:`pipeline.null_twin`):
    ``models.null_*`` columns and a ``null_neurons`` table. ``measure_null=False`` (a survey that
    has measured or is measuring this architecture's twin elsewhere) names the twin only; the
    survey driver fills in its counts. ``stored_null`` (``pans detect``: the results folder's
    :meth:`~pipeline.store.ResultStore.null_counts`) is asked for the twin by its id, known only
    here (the input size may be the model's own): a twin it knows is not measured again, its counts
    fill the row (``null_seconds`` NULL: not measured here) and no ``null_neurons`` table is returned.
    A ``--random-init`` model is a twin itself: its own
    statistics are fitted to the probe as a twin's are (:func:`fitted_to_probe`), and it gets no second twin.
    """
    pp = loaded.preprocess.with_image_size(settings.image_size)
    images = make_probe(settings.probe, settings.num_images, pp, settings.seed)
    cfg_id = settings.config_id
    extra: dict[str, Any] = {}
    twin: MeasuredBeside | None = None
    if loaded.ref.pretrained and settings.null:
        nid = extra["null_model_id"] = null_model_id(loaded.ref, int(images.shape[2]), int(images.shape[3]))
        stored = stored_null(nid) if measure_null and stored_null is not None else None
        if stored is not None:
            extra.update(null_pans=stored[0], null_padded_neurons=stored[1])
        elif measure_null:
            twin = MeasuredBeside(
                lambda: measure_null_twin(loaded.ref, images, settings, fetched=fetched),
                resolve_device(settings.device),
            )
    with contextlib.ExitStack() as fitting:
        if twin is not None:
            fitting.enter_context(twin)
        if not loaded.ref.pretrained:  # a null itself: fitted to the probe exactly as a twin is
            device = resolve_device(settings.device)
            how = fitting.enter_context(
                fitted_to_probe(loaded.model, images, batch_size=settings.batch_size, device=device)
            )
            extra["recalibration"] = how.method
        result = detect_pans(
            loaded.model,
            images,
            tau=settings.tau,
            batch_size=settings.batch_size,
            device=settings.device,
            model_id=loaded.model_id,
            config_id=cfg_id,
            reference=settings.reference,
        )
    s = result.summary
    if twin is not None:  # the twin's weight draws it ran between the model's modules are not the model's time
        s["detect_seconds"] = max(0.0, s["detect_seconds"] - twin.lent_seconds)
    _check_measured(loaded.model_id, s, images.shape)
    tables: dict[str, pa.Table] = {}
    if twin is not None:
        null = twin.result()
        extra.update(null_pans=null.pans, null_padded_neurons=null.padded_neurons)
        extra.update(null_recalibration=null.recalibration.method, null_seconds=null.seconds)
        tables["null_neurons"] = null.neurons
    row: dict[str, Any] = {
        **loaded.record(),
        "config_id": cfg_id,
        "run_id": run_id,
        **{k: s[k] for k in ("conv_layers", "conv_neurons", "padded_layers", "padded_neurons", "skipped_neurons")},
        **{k: s[k] for k in ("pans", "dead_neurons", "border_informed", "device", "detect_seconds")},
        "probe": probe_label(settings.probe),
        "num_images": int(images.shape[0]),
        "image_h": int(images.shape[2]),
        "image_w": int(images.shape[3]),
        "tau": settings.tau,
        "reference": settings.reference,
        "detector_version": DETECTOR_VERSION,
        "versions": library_versions_json(),
        "load_seconds": load_seconds,
        "created_at": dt.datetime.now(dt.UTC),
        **extra,
    }
    return {**tables, "neurons": result.neurons, "layers": result.layers, "models": table_from_rows("models", [row])}


def _check_measured(model_id: str, summary: dict[str, Any], shape: Any) -> None:
    """A model whose every padded convolution was skipped measured nothing: that is an error
    (exit 2 in ``pans detect``, the model's failure in a survey), not a row of zeros."""
    if summary["padded_neurons"] == 0 and summary["skipped_neurons"] > 0:
        h, w = int(shape[2]), int(shape[3])
        raise PanSurveyError(
            f"{model_id}: at a {h}x{w} px input no padded convolution keeps positions clear of the padding "
            f"(0 neurons measured, {summary['skipped_neurons']} skipped); use a larger --image-size"
        )


def run_model(
    ref: ModelRef | str,
    settings: DetectSettings,
    *,
    run_id: str | None = None,
    stored_null: StoredNull | None = None,
) -> dict[str, pa.Table]:
    """Load ``ref`` and detect its PANs (its null twin: see :func:`detect_loaded`)."""
    started = time.perf_counter()
    loaded = load_model(ref)
    return detect_loaded(
        loaded, settings, load_seconds=time.perf_counter() - started, run_id=run_id, stored_null=stored_null
    )


def with_null_counts(models: pa.Table, pans: int, padded: int, method: str | None) -> pa.Table:
    """A ``models`` table with the null twin's counts filled in (a survey reuses one twin per architecture)."""
    for name, value in (("null_pans", pans), ("null_padded_neurons", padded), ("null_recalibration", method)):
        i = models.schema.get_field_index(name)
        f = models.schema.field(i)
        models = models.set_column(i, f, pa.array([value] * models.num_rows, f.type))
    return models
