"""Units and wording (pruning_core.presentation.units): sparsity in both vocabularies, durations, method names
and colours."""

import pytest

from pruning_core.presentation import units


@pytest.mark.parametrize("sparsity, text", [
    (0.99, "99% removed · compression 10^2.0 (100×)"),
    (0.999, "99.9% removed · compression 10^3.0 (1,000×)"),
    (0.5, "50% removed · compression 10^0.3 (2×)"),
    (0.0, "0% removed · dense network (no compression)"),
])
def test_sparsity_text_gives_both_vocabularies(sparsity, text):
    assert units.sparsity_text(sparsity) == text


def test_percent_never_rounds_a_high_sparsity_to_100():
    assert units.percent(0.99999) == "99.999%"
    assert units.percent(0.947) == "94.7%"
    assert units.percent(0.00098) == "0.098%"
    assert units.percent(1.0) == "100%"


def test_log_compression_round_trip_gives_exact_preset_sparsities():
    # The landing page's slider moves in log10 compression; 10^2 and 10^3 must be the presets' 0.99 and 0.999
    # exactly, or the same configuration would get a different key and not be reused.
    assert units.sparsity_from_log(2.0) == 0.99
    assert units.sparsity_from_log(3.0) == 0.999
    assert units.sparsity_from_log(0.0) == 0.0
    assert round(units.log_compression(0.999), 6) == 3.0
    with pytest.raises(ValueError):
        units.log_compression(1.0)


def test_duration_text():
    assert units.duration_text(42) == "42 s"
    assert units.duration_text(200) == "3 min 20 s"
    assert units.duration_text(None) == "–"


def test_method_colors_are_the_documented_ones_and_distinct():
    names = ["synflow", "snip", "grasp", "magnitude", "random"]
    colors = [units.method_color(n) for n in names]
    assert len(set(colors)) == len(colors)
    assert units.method_color("synflow") == "#0072B2"   # SynFlow is blue on every chart
    assert units.method_color("imp") == units.METHOD_COLORS["imp"]
    assert units.method_color("dense") == units.DENSE_COLOR
    assert units.method_label("dense") == "Dense baseline"
    assert units.method_label("synflow") == "SynFlow" and units.method_label("not_registered") == "not_registered"


def test_an_unknown_method_gets_a_palette_colour_no_fixed_method_has():
    # A method registered without a fixed colour (or a name the store kept from an older version): a palette
    # colour that no fixed method uses, chosen from the name, so two such names do not all share one colour.
    free = [c for c in units.PALETTE if c not in units.METHOD_COLORS.values()]
    assert len(free) >= 2
    colors = {name: units.method_color(name) for name in ("x", "y", "my_method")}
    assert set(colors.values()) <= set(free)
    assert colors["x"] != colors["y"]     # neighbouring names land on different free colours


def test_every_registered_method_has_its_own_colour():
    # IMP and GemMiner used to borrow SynFlow's and SNIP's colours (first palette entries).
    colors = {name: units.method_color(name) for name in units.METHODS}
    assert len(set(colors.values())) == len(colors), colors


def test_run_name_says_which_sanity_check_or_init_a_run_used():
    plain = units.run_name("synflow", 0.9, units.run_variant({"sanity": "none"}), run_id=4)
    assert plain == "#4 SynFlow 90%"
    inverted = units.run_name("synflow", 0.9, units.run_variant({"sanity": "invert"}), run_id=5)
    assert inverted == "#5 SynFlow 90% (scores inverted: best weights removed)"
    assert units.run_variant({"sanity": "shuffle", "sparse_init": True}) == "mask shuffled · sparsity-aware init"
    assert units.run_variant({"sanity": "reinit"}) == "weights reinitialised"
    assert units.run_variant(None) == units.run_variant({}) == ""
    # Every sanity check of the config has a name, so none of them can read as the plain method.
    from pruning_core.config import SANITY_CHECKS
    assert {v for v in SANITY_CHECKS if v != "none"} == set(units.RUN_VARIANTS)
    assert units.run_name("dense", 0.0) == "Dense baseline"
    assert units.run_name(None, float("nan")) == "?"


def test_csv_exports_keep_fractions_exact_and_write_iso_times():
    import io

    import pandas as pd

    table = pd.DataFrame({"method": ["synflow", "magnitude"], "sparsity": [0.99, 0.999],
                          "compression": [1 / (1 - 0.99), 1 / (1 - 0.999)],   # 100.00000000000009, 1000.0000000000009
                          "final_test_accuracy": [0.9583333333333334, None],
                          "created_at": [1796117425.25, None], "progress": ["", "epoch 1/2"]})
    text = units.export_csv(table, drop=("progress", "absent"))
    back = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert list(back.columns) == ["method", "sparsity", "compression", "final_test_accuracy", "created_at"]
    assert "100.00000000000009" not in text and list(back["compression"]) == [100.0, 1000.0]
    assert "0.9583333333333334" in text                         # full precision, not rounded to a percentage
    assert list(back["sparsity"]) == [0.99, 0.999]
    assert list(back["created_at"]) == ["2026-12-01T09:30:25+00:00", ""]
    assert "progress" in table.columns                           # the caller's table is left as it was
    assert units.iso_time(float("nan")) == units.iso_time(None) == ""
    assert "ISO 8601" in units.EXPORT_NOTE and "fractions" in units.EXPORT_NOTE


def test_cluster_text_says_where_jobs_run_and_how_busy_it_is():
    busy = {"address": "10.0.0.5:6379", "connected": True, "nodes": 2, "cpus": 32.0, "cpus_free": 30.0,
            "gpus": 4.0, "gpus_free": 1.0, "running": [{"run_id": 1}, {"run_id": 2}, {"run_id": 3}], "waiting": 1}
    assert units.cluster_text(busy) == ("Ray cluster at 10.0.0.5:6379: 2 machines · 4 GPUs (1 free) · "
                                        "32 CPUs (30 free) · 3 running, 1 waiting")
    local = {"address": "local", "connected": True, "nodes": 1, "cpus": 1.0, "cpus_free": 0.5, "gpus": 0.0,
             "gpus_free": 0.0, "running": [], "waiting": 0}
    assert units.cluster_text(local) == "local Ray: 1 machine · 1 CPU (0.5 free) · 0 running, 0 waiting"
    assert units.cluster_text({"address": "10.0.0.5:6379", "connected": False}) == (
        "Ray cluster at 10.0.0.5:6379: not connected")
