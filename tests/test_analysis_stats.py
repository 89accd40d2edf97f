"""Every canned statistic (named query) against an independent computation in plain Python.

The folder is synthetic (analysis/synthetic.py) and written with ResultStore; the expected values
are computed here from the rows read back with pyarrow, without DuckDB and without the SQL.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import analysis
from analysis.families import family
from analysis.synthetic import TAU as SYNTHETIC_TAU
from analysis.synthetic import build_folder, model_tables
from pipeline.detect.classify import CONSTANT_RULE
from pipeline.detect.classify import classify as pan_rule_classify
from pipeline.errors import PanSurveyError
from pipeline.schema import SIDES
from pipeline.store import ResultStore, file_key

APPROX = {"rel": 1e-6, "abs": 1e-9}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stats") / "results"
    build_folder(root, models=10, neurons_per_model=240, failures=3, seed=7)
    # An interrupted model: neurons and layers written, no models row. It must not be counted.

    tables = model_tables(99, "resnet50", 100, np.random.default_rng(1))
    key = file_key(tables["models"]["model_id"][0].as_py(), "cfgsynthetic")
    ResultStore(root).write("neurons", key, tables["neurons"])
    ResultStore(root).write("layers", key, tables["layers"])
    return root


@pytest.fixture(scope="module")
def con(folder: Path):
    return analysis.open(folder, materialize=True)


@pytest.fixture(scope="module")
def data(folder: Path) -> dict:
    store = ResultStore(folder)
    models = {(m["model_id"], m["config_id"]): m for m in store.read("models").to_pylist()}
    neurons = [n for n in store.read("neurons").to_pylist() if (n["model_id"], n["config_id"]) in models]
    layers = {(r["model_id"], r["config_id"], r["layer_index"]): r for r in store.read("layers").to_pylist()}
    for n in neurons:
        n["family"] = family(models[(n["model_id"], n["config_id"])]["architecture"])
        n["L"] = layers[(n["model_id"], n["config_id"], n["layer_index"])]
    return {"models": models, "neurons": neurons, "failures": store.read("failures").to_pylist()}


def rows(con, name: str) -> list[dict]:
    table = con.sql(f"SELECT * FROM {name}").to_arrow_table()
    return [{k: v for k, v in r.items() if k != "config_id"} for r in table.to_pylist()]


def pct(num: float, den: float | None) -> float | None:
    return 100.0 * num / den if den else None


def assert_rows(actual: list[dict], expected: list[dict], key: str | tuple[str, ...]) -> None:
    keys = (key,) if isinstance(key, str) else key
    index = {tuple(r[k] for k in keys): r for r in actual}
    assert len(index) == len(actual) == len(expected)
    for exp in expected:
        got = index[tuple(exp[k] for k in keys)]
        for column, value in exp.items():
            if isinstance(value, float):
                assert got[column] == pytest.approx(value, **APPROX), (exp, column)
            else:
                assert got[column] == value, (exp, column, got[column])


def per_model(data: dict) -> list[dict]:
    out = []
    for (mid, _cfg), m in data["models"].items():
        own = [n for n in data["neurons"] if n["model_id"] == mid]
        pans = sum(n["is_pan"] for n in own)
        out.append(
            {
                "model_id": mid,
                "family": family(m["architecture"]),
                "padded_neurons": len(own),
                "pans": pans,
                "pan_pct_padded": pct(pans, len(own)),
                "conv_neurons": m["conv_neurons"],
                "pan_pct_conv": pct(pans, m["conv_neurons"]),
                "dead": sum(n["dead"] for n in own),
                "border_informed": sum(n["border_informed"] for n in own),
                "num_params": m["num_params"],
                "top1": m["top1"],
            }
        )
    return out


def test_pans_per_model(con, data):
    actual = rows(con, "pans_per_model")
    assert_rows(actual, per_model(data), "model_id")
    shares = [r["pan_pct_padded"] for r in actual]
    assert shares == sorted(shares, reverse=True)  # sorted, highest share first
    assert all(r["model_id"] != "timm:resnet50.synthetic_99" for r in actual)  # unfinished model left out


def test_overview(con, data):
    per = per_model(data)
    with_conv = [p for p in per if p["conv_neurons"] is not None]
    expected = {
        "models": len(per),
        "families": len({p["family"] for p in per}),
        "padded_neurons": sum(p["padded_neurons"] for p in per),
        "pans": sum(p["pans"] for p in per),
        "pan_pct_padded": pct(sum(p["pans"] for p in per), sum(p["padded_neurons"] for p in per)),
        "median_model_pan_pct": statistics.median(p["pan_pct_padded"] for p in per),
        "pan_pct_conv": pct(sum(p["pans"] for p in with_conv), sum(p["conv_neurons"] for p in with_conv)),
        "dead": sum(p["dead"] for p in per),
        "border_informed": sum(p["border_informed"] for p in per),
        "failures": len(data["failures"]),
    }
    assert_rows(rows(con, "overview"), [expected], "models")


def test_pans_by_family(con, data):
    groups = defaultdict(list)
    for p in per_model(data):
        groups[p["family"]].append(p)
    expected = []
    for fam, ps in groups.items():
        shares = [p["pan_pct_padded"] for p in ps]
        expected.append(
            {
                "family": fam,
                "models": len(ps),
                "padded_neurons": sum(p["padded_neurons"] for p in ps),
                "pans": sum(p["pans"] for p in ps),
                "pan_pct_padded": pct(sum(p["pans"] for p in ps), sum(p["padded_neurons"] for p in ps)),
                "median_model_pan_pct": statistics.median(shares),
                "min_model_pan_pct": min(shares),
                "max_model_pan_pct": max(shares),
                "median_model_pans": float(statistics.median(p["pans"] for p in ps)),
            }
        )
    assert_rows(rows(con, "pans_by_family"), expected, "family")
    assert {"efficientnet_lite", "efficientnet", "resnet", "mobilenetv3"} <= set(groups)


def layer_breakdown(data: dict, keyfn) -> list[dict]:
    groups: dict = defaultdict(lambda: {"layers": set(), "neurons": 0, "pans": 0, "dead": 0, "bi": 0})
    for n in data["neurons"]:
        g = groups[keyfn(n["L"])]
        g["layers"].add((n["model_id"], n["layer_index"]))
        g["neurons"] += 1
        g["pans"] += n["is_pan"]
        g["dead"] += n["dead"]
        g["bi"] += n["border_informed"]
    total_pans = sum(g["pans"] for g in groups.values())
    return [
        {
            "key": k,
            "layers": len(g["layers"]),
            "neurons": g["neurons"],
            "pans": g["pans"],
            "pan_pct": pct(g["pans"], g["neurons"]),
            "pct_of_pans": pct(g["pans"], total_pans),
            "dead": g["dead"],
            "border_informed": g["bi"],
        }
        for k, g in groups.items()
    ]


def depth_label(layer: dict) -> str:
    b = min(math.floor(layer["relative_depth"] * 10 + 1e-6), 9)  # docs/analysis.md: deciles, float32-tolerant
    return f"{b / 10:.1f}-{b / 10 + 0.1:.1f}"


@pytest.mark.parametrize(
    ("name", "columns", "keyfn"),
    [
        ("pans_by_depth", ("depth",), lambda L: depth_label(L)),
        ("pans_by_kernel", ("kernel",), lambda L: f"{L['kernel_h']}x{L['kernel_w']}"),
        ("pans_by_stride", ("stride",), lambda L: f"{L['stride_h']}x{L['stride_w']}"),
        ("pans_by_dilation", ("dilation",), lambda L: f"{L['dilation_h']}x{L['dilation_w']}"),
        ("pans_by_padding", ("padding_kind", "padding_mode"), lambda L: (L["padding_kind"], L["padding_mode"])),
        ("pans_by_conv_type", ("conv_type",), lambda L: L["conv_type"]),
    ],
)
def test_layer_breakdowns(con, data, name, columns, keyfn):
    expected = []
    for e in layer_breakdown(data, keyfn):
        key = e.pop("key")
        key = key if isinstance(key, tuple) else (key,)
        if name != "pans_by_depth":
            e.pop("dead")
            e.pop("border_informed")
        expected.append({**dict(zip(columns, key, strict=True)), **e})
    assert len(expected) > 1  # the synthetic folder varies this attribute
    assert_rows(rows(con, name), expected, columns)


def pan_type(sides: str) -> str:
    parts = sides.split("+")
    if len(parts) == 1:
        return "single side"
    if len(parts) == 2:
        return "opposite pair" if set(parts) in ({"top", "bottom"}, {"left", "right"}) else "corner pair"
    return "three sides" if len(parts) == 3 else "all four"


def test_pan_types(con, data):
    pans = [n for n in data["neurons"] if n["is_pan"]]
    counts = defaultdict(int)
    for n in pans:
        counts[(pan_type(n["pan_sides"]), n["pan_sign"])] += 1
    expected = [
        {"pan_type": t, "pan_sign": s, "pans": c, "pct_of_pans": pct(c, len(pans))} for (t, s), c in counts.items()
    ]
    assert {"single side", "corner pair", "opposite pair", "all four"} <= {t for t, _ in counts}
    assert_rows(rows(con, "pan_types"), expected, ("pan_type", "pan_sign"))


def test_pans_by_side_and_side_sets(con, data):
    pans = [n for n in data["neurons"] if n["is_pan"]]
    by_side = {s: {"side": s, "pans": 0, "excited": 0, "inhibited": 0, "mixed": 0} for s in SIDES}
    sets: dict = {}
    for n in pans:
        for side in n["pan_sides"].split("+"):
            by_side[side]["pans"] += 1
            by_side[side][n["pan_sign"]] += 1
        e = sets.setdefault(
            n["pan_sides"],
            {
                "pan_sides": n["pan_sides"],
                "pan_type": pan_type(n["pan_sides"]),
                "pans": 0,
                "excited": 0,
                "inhibited": 0,
                "mixed": 0,
            },
        )
        e["pans"] += 1
        e[n["pan_sign"]] += 1
    for e in sets.values():
        e["pct_of_pans"] = pct(e["pans"], len(pans))
    side_rows = rows(con, "pans_by_side")
    assert [r["side"] for r in side_rows] == list(SIDES)  # in the order top, bottom, left, right
    assert_rows(side_rows, list(by_side.values()), "side")
    assert_rows(rows(con, "pan_side_sets"), list(sets.values()), "pan_sides")


def family_rollup(data: dict) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for n in data["neurons"]:
        groups[n["family"]].append(n)
        groups["(all)"].append(n)
    return groups


def test_border_response(con, data):
    expected = []
    for fam, ns in family_rollup(data).items():
        own = sum(n["is_pan"] for n in ns)
        inherited = sum(n["border_informed"] for n in ns)
        expected.append(
            {
                "family": fam,
                "models": len({n["model_id"] for n in ns}),
                "padded_neurons": len(ns),
                "own": own,
                "own_pct": pct(own, len(ns)),
                "inherited": inherited,
                "inherited_pct": pct(inherited, len(ns)),
                "neither": sum(not n["is_pan"] and not n["border_informed"] and not n["dead"] for n in ns),
                "inherited_per_own": inherited / own if own else None,
            }
        )
    actual = rows(con, "border_response")
    assert actual[0]["family"] == "(all)"
    assert_rows(actual, expected, "family")


def test_dead_neurons(con, data):
    per = per_model(data)
    groups = defaultdict(list)
    for p in per:
        groups[p["family"]].append(p)
        groups["(all)"].append(p)
    expected = [
        {
            "family": fam,
            "models": len(ps),
            "models_with_dead": sum(p["dead"] > 0 for p in ps),
            "padded_neurons": sum(p["padded_neurons"] for p in ps),
            "dead": sum(p["dead"] for p in ps),
            "dead_pct": pct(sum(p["dead"] for p in ps), sum(p["padded_neurons"] for p in ps)),
            "max_model_dead_pct": max(pct(p["dead"], p["padded_neurons"]) for p in ps),
        }
        for fam, ps in groups.items()
    ]
    assert sum(p["dead"] for p in per) > 0
    assert_rows(rows(con, "dead_neurons"), expected, "family")


def binned(per: list[dict], label) -> list[dict]:
    groups = defaultdict(list)
    for p in per:
        groups[label(p)].append(p)
    out = []
    for key, ps in groups.items():
        shares = [p["pan_pct_padded"] for p in ps]
        out.append(
            {
                "key": key,
                "models": len(ps),
                "pans": sum(p["pans"] for p in ps),
                "pan_pct_padded": pct(sum(p["pans"] for p in ps), sum(p["padded_neurons"] for p in ps)),
                "median_model_pan_pct": statistics.median(shares),
                "mean_model_pan_pct": statistics.mean(shares),
                "_ps": ps,
            }
        )
    return out


def test_pans_vs_size(con, data):
    def label(p):
        n = p["num_params"]
        if n is None:
            return "(unknown)"
        return "<5M" if n < 5e6 else "5M-25M" if n < 25e6 else "25M-100M" if n < 100e6 else ">=100M"

    expected = []
    for e in binned(per_model(data), label):
        ps = e.pop("_ps")
        sizes = [p["num_params"] for p in ps if p["num_params"] is not None]
        tops = [p["top1"] for p in ps if p["top1"] is not None]
        e["size"] = e.pop("key")
        e["median_params_m"] = statistics.median(sizes) / 1e6 if sizes else None
        e["median_top1"] = statistics.median(tops) if tops else None
        expected.append(e)
    assert any(e["size"] == "(unknown)" for e in expected)
    assert_rows(rows(con, "pans_vs_size"), expected, "size")


def test_pans_vs_accuracy(con, data):
    def label(p):
        t = p["top1"]
        if t is None:
            return "(unknown)"
        t = t * 100 if t <= 1 else t
        return "<70" if t < 70 else "70-75" if t < 75 else "75-80" if t < 80 else "80-85" if t < 85 else ">=85"

    expected = []
    for e in binned(per_model(data), label):
        e.pop("_ps")
        e["top1_range"] = e.pop("key")
        expected.append(e)
    assert_rows(rows(con, "pans_vs_accuracy"), expected, "top1_range")


def average_ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def test_pan_share_correlations(con, data):
    per = per_model(data)
    expected = []
    for against, xfn in (
        ("log10(num_params)", lambda p: math.log10(p["num_params"]) if p["num_params"] else None),
        ("top1", lambda p: p["top1"]),
    ):
        pairs = [(xfn(p), p["pan_pct_padded"]) for p in per if xfn(p) is not None]
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
        expected.append(
            {
                "against": against,
                "models": len(pairs),
                "pearson": statistics.correlation(xs, ys),
                "spearman": statistics.correlation(average_ranks(xs), average_ranks(ys)),
            }
        )
    assert_rows(rows(con, "pan_share_correlations"), expected, "against")


def test_failures_summary(con, data):
    groups = defaultdict(list)
    for f in data["failures"]:
        groups[(f["stage"], f["error_type"])].append(f)
    expected = [
        {
            "stage": s,
            "error_type": e,
            "failures": len(fs),
            "models": len({f["model_id"] for f in fs}),
            "example": min(f["message"] for f in fs)[:160],
        }
        for (s, e), fs in groups.items()
    ]
    assert_rows(rows(con, "failures_summary"), expected, ("stage", "error_type"))


def test_every_named_query_is_tested():
    tested = {
        "overview",
        "pans_per_model",
        "pans_by_family",
        "pans_by_depth",
        "pans_by_kernel",
        "pans_by_stride",
        "pans_by_dilation",
        "pans_by_padding",
        "pans_by_conv_type",
        "pan_types",
        "pans_by_side",
        "pan_side_sets",
        "border_response",
        "dead_neurons",
        "pans_vs_size",
        "pans_vs_accuracy",
        "pan_share_correlations",
        "failures_summary",
        "pans_vs_null",  # tests/test_null_twin.py (on real detector output, with and without a null)
        "null_gap",
    }
    assert {q.name for q in analysis.named_queries()} == tested


# --- re-classification at another tau -----------------------------------------------------------


def classify(n: dict, tau: float) -> tuple[bool, str | None, str | None, bool]:
    """The detector's rule (pipeline/detect/classify.py, the one copy) on one stored row."""
    own = np.array([[np.nan if n[f"own_z_{s}"] is None else n[f"own_z_{s}"] for s in SIDES]])
    obs = np.array([[np.nan if n[f"obs_z_{s}"] is None else n[f"obs_z_{s}"] for s in SIDES]])
    c = pan_rule_classify(own, obs, np.array([bool(n["dead"])]), tau, n["pan_rule"] or CONSTANT_RULE)
    return bool(c["is_pan"][0]), c["pan_sides"][0], c["pan_sign"][0], bool(c["border_informed"][0])


@pytest.mark.parametrize("tau", [2.0, 3.0, 3.5, 5.5])
def test_pans_at_reclassifies_like_the_detector(con, data, tau):
    got = {
        (r["model_id"], r["layer_index"], r["channel"]): (
            r["is_pan"],
            r["pan_sides"],
            r["pan_sign"],
            r["border_informed"],
        )
        for r in con.sql(f"SELECT * FROM pans_at({tau}) SEMI JOIN models USING (model_id, config_id)")
        .to_arrow_table()
        .to_pylist()
    }
    expected = {(n["model_id"], n["layer_index"], n["channel"]): classify(n, tau) for n in data["neurons"]}
    assert got == expected
    if tau == SYNTHETIC_TAU:  # the synthetic folder's stored classification was made at its tau, same rule
        stored = {
            k: (n["is_pan"], n["pan_sides"], n["pan_sign"], n["border_informed"])
            for k, n in zip(expected, data["neurons"], strict=True)
        }
        assert stored == expected


def test_nan_sides_are_never_pans(con):
    """NaN own_z (an empty strip written as NaN) must not count as a huge z (DuckDB orders NaN above all)."""
    nan_rows = con.sql("SELECT count(*) FROM neurons WHERE isnan(own_z_bottom)").fetchall()[0][0]
    assert nan_rows > 0
    hits = con.sql("SELECT count(*) FROM pans_at(1e9) WHERE is_pan").fetchall()[0][0]
    assert hits == 0


def test_sweep_and_per_model_at(con, data, folder):
    taus = [2.0, 4.0]
    sweep = {r["tau"]: r for r in con.sql("SELECT * FROM pan_count_sweep([2.0, 4.0])").to_arrow_table().to_pylist()}
    for tau in taus:
        expected = sum(classify(n, tau)[0] for n in data["neurons"])
        assert sweep[tau]["pans"] == expected
        assert sweep[tau]["padded_neurons"] == len(data["neurons"])
    per = {
        r["model_id"]: r["pans"] for r in con.sql("SELECT * FROM pans_per_model_at(4.0)").to_arrow_table().to_pylist()
    }
    for mid, _ in data["models"]:
        assert per[mid] == sum(classify(n, 4.0)[0] for n in data["neurons"] if n["model_id"] == mid)
    # --tau re-classifies every named query: pans_per_model at tau 4 equals the macro's counts.
    at4 = analysis.open(folder, tau=4.0, materialize=True)
    assert {
        r["model_id"]: r["pans"] for r in at4.sql("SELECT * FROM pans_per_model").to_arrow_table().to_pylist()
    } == per


def test_fetch_as_arrow_and_missing_optional_libraries(con):
    table = analysis.fetch(con, "@pans_by_kernel")
    assert table.num_rows > 0 and "pan_pct" in table.column_names
    for kind, module in (("pandas", "pandas"), ("polars", "polars")):
        try:
            __import__(module)
        except ImportError:
            with pytest.raises(PanSurveyError, match=module):
                analysis.fetch(con, "@pans_by_kernel", as_=kind)
        else:
            assert len(analysis.fetch(con, "@pans_by_kernel", as_=kind)) == table.num_rows


def test_lazy_views_give_the_same_numbers(con, folder):
    lazy = analysis.open(folder)
    for query in analysis.named_queries():
        got, want = rows(lazy, query.name), rows(con, query.name)
        assert len(got) == len(want), query.name
        for a, b in zip(got, want, strict=True):
            assert a.keys() == b.keys()
            for key, value in b.items():  # float sums may differ in the last bit
                same = a[key] == pytest.approx(value, rel=1e-12) if isinstance(value, float) else a[key] == value
                assert same, (query.name, key)


def test_configurations_are_never_mixed(tmp_path):
    import numpy as np

    root = tmp_path / "r"
    build_folder(root, models=3, neurons_per_model=80, failures=0)
    store = ResultStore(root)
    second = 0
    for i in range(2):  # two of the models again, under a second configuration
        tables = model_tables(i, "resnet50", 50, np.random.default_rng(i), config_id="cfgsecond")
        store.write_model(tables, file_key(tables["models"]["model_id"][0].as_py(), "cfgsecond"))
        second += tables["neurons"].num_rows
    con = analysis.open(root, materialize=True)
    overview = {r["config_id"]: r for r in con.sql("SELECT * FROM overview").to_arrow_table().to_pylist()}
    assert overview["cfgsynthetic"]["models"] == 3 and overview["cfgsecond"]["models"] == 2
    assert overview["cfgsecond"]["padded_neurons"] == second
    by_family = con.sql("SELECT config_id, sum(models) FROM pans_by_family GROUP BY ALL ORDER BY 1").fetchall()
    assert by_family == [("cfgsecond", 2), ("cfgsynthetic", 3)]
