"""Findings in words (pruning_core.presentation.findings): layer-collapse findings, the summaries of sweeps and
gradient-flow measurements, and the sentences the pages print beside the charts."""

import math

import pandas as pd

import pytest
from presentation_tables import cost_table, flow_table, layer_table, metrics, sweep_rows, with_search_rows

from pruning_core.presentation import findings


def test_collapse_findings_names_collapsed_layers():
    summary = findings.layer_summary(layer_table([93, 0, 0, 1], effective=[0, 0, 0, 0]))
    (level, text), = findings.collapse_findings(summary)
    assert level == "error"
    assert "`conv2`, `conv3`" in text
    assert "Effective density 0%" in text


def test_collapse_findings_warns_about_disconnected_weights_without_collapse():
    summary = findings.layer_summary(layer_table([10, 20, 30, 5], effective=[2, 3, 4, 1]))
    (level, text), = findings.collapse_findings(summary)
    assert level == "warning"
    assert "disconnected" in text
    assert text.startswith("**84.6% of the kept weights")


def test_collapse_findings_all_clear():
    summary = findings.layer_summary(layer_table([100, 200, 300, 50]))
    assert [level for level, _ in findings.collapse_findings(summary)] == ["success"]


def test_collapse_brief_for_compared_methods():
    assert findings.collapse_brief(findings.layer_summary(layer_table([93, 0, 0, 1]))) == \
        ("error", "layer collapse in `conv2`, `conv3`")
    level, text = findings.collapse_brief(findings.layer_summary(layer_table([18, 5, 10, 61], effective=[0, 0, 0, 0])))
    assert level == "warning" and text.startswith("100% of its kept weights are disconnected")
    assert findings.collapse_brief(findings.layer_summary(layer_table([18, 5, 10, 61])))[0] == "success"


def test_layer_summary_matches_table():
    summary = findings.layer_summary(layer_table([93, 0, 0, 1], effective=[50, 0, 0, 1]))
    assert summary["kept"] == 94
    assert summary["collapsed"] == ["conv2.weight", "conv3.weight"]
    assert summary["density"] == pytest.approx(94 / (288 + 18432 + 73728 + 1280))
    assert summary["disconnected_layers"] == []


def test_tradeoff_summary_means_and_stds_over_seeds():
    summary = findings.tradeoff_summary(sweep_rows())
    row = summary[(summary["method"] == "synflow") & (summary["sparsity"] == 0.99)].iloc[0]
    assert row["mean"] == pytest.approx(0.91)
    assert row["std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert row["seeds"] == 2
    assert row["compression"] == pytest.approx(100)
    assert summary.loc[summary["method"] == "magnitude", "collapsed"].tolist() == [False, False, True]


def test_split_metrics_separates_the_rows_of_a_mask_search():
    training, search = findings.split_metrics(with_search_rows(metrics([0.5])))
    assert search["round"].tolist() == [0, 1] and training["epoch"].notna().all()
    assert findings.split_metrics(metrics([0.5]))[1].empty


def test_ticket_findings_give_the_speed_up_and_the_accuracy_gap():
    sentences = findings.ticket_findings(cost_table())
    assert sentences[0].startswith("**GemMiner found its mask 4.0× faster than IMP**: 1.2 s against 5.0 s, "
                                   "22 training steps of score learning against 66")
    assert "2.8× less wall time in all (2.2 s against 6.2 s)" in sentences[1]
    assert sentences[2] == "Its ticket is 10.8 points less accurate: 85% against IMP's 95.8%."
    level = cost_table().assign(test_accuracy=[0.958, 0.952, None])
    assert findings.ticket_findings(level)[2].startswith("Its ticket reached IMP-level accuracy")
    assert findings.ticket_findings(cost_table().iloc[[0, 2]]) == []   # GemMiner not finished: nothing to say


def test_gradient_flow_summary_reads_init_and_final_values():
    summary = findings.gradient_flow_summary(flow_table().iloc[::-1]).set_index("variant")
    assert summary.loc["sparse", "init_grad_norm"] == 0.01
    assert summary.loc["dense", "mean_grad_norm"] == pytest.approx(2.5)   # initialisation left out
    assert summary.loc["sparse_init", "final_test_accuracy"] == 0.66
    assert summary.loc["lottery", "init_test_accuracy"] == 0.76
    assert summary.loc["lottery", "density"] == 0.1


def test_gradient_flow_findings_tell_the_story():
    sentences = findings.gradient_flow_findings(findings.gradient_flow_summary(flow_table()), chance=0.1)
    assert sentences[0].startswith("At initialisation the sparse network's gradient is **400× weaker than** the dense "
                                   "network's (0.0100 vs 4.00)")
    assert "gradient norm of 5.00, 500× stronger than with the standard initialisation, and trains to 66% test " \
           "accuracy against 10%." in sentences[1]
    assert sentences[2].startswith("The lottery ticket starts with a gradient norm of 0.600 (60× stronger than the "
                                   "sparse network's) and reaches 94%.")
    assert "already classifies 76%" in sentences[3]
    alone = findings.gradient_flow_findings(findings.gradient_flow_summary(flow_table().query("variant == 'dense'")))
    assert alone == []


def test_an_accuracy_at_init_below_chance_is_explained_not_hidden():
    table = flow_table()
    table.loc[(table["variant"] == "sparse") & (table["step"] == 0), "test_accuracy"] = 0.0139
    sentences = findings.gradient_flow_findings(findings.gradient_flow_summary(table), chance=0.1)
    assert sentences[-1].startswith("Before training, sparse, standard init classifies only 1.4% of the test images, "
                                    "below chance (10%). That is not a bug")
    # At chance nothing is said.
    level = flow_table()
    level["test_accuracy"] = level["test_accuracy"].where(level["step"] != 0, 0.1)
    assert not any("below chance" in s for s in findings.gradient_flow_findings(
        findings.gradient_flow_summary(level), chance=0.1))

def with_dynamic_rows(set_norms, rigl_norms):
    rows = [flow_table()]
    for variant, label, norms in (("set", "SET", set_norms), ("rigl", "RigL", rigl_norms)):
        rows.append(pd.DataFrame([{"variant": variant, "label": label, "step": step, "epoch": step / 10,
                                   "grad_norm": norm, "train_loss": 1.0, "test_accuracy": None, "density": 0.1}
                                  for step, norm in zip((0, 5, 10), norms)]))
    return pd.concat(rows, ignore_index=True)


def test_gradient_flow_findings_compare_dynamic_sparse_training_with_the_static_mask():
    # Static sparse: 0.02 and 0.03 along training, mean 0.025.
    sentence = findings.gradient_flow_findings(findings.gradient_flow_summary(with_dynamic_rows(
        [0.01, 0.04, 0.06], [0.01, 0.2, 0.3])))[-1]
    assert sentence.startswith("Along training the static sparse network's gradient norm averages 0.0250, against "
                               "RigL's 0.250 (10× stronger than the static network's) and SET's 0.0500 (2× stronger")
    assert "dynamic sparse training keeps more gradient flowing" in sentence
    mixed = findings.gradient_flow_findings(findings.gradient_flow_summary(with_dynamic_rows(
        [0.01, 0.01, 0.01], [0.01, 0.2, 0.3])))[-1]
    assert "only part of Evci et al.'s finding" in mixed
    neither = findings.gradient_flow_findings(findings.gradient_flow_summary(with_dynamic_rows(
        [0.01, 0.01, 0.01], [0.01, 0.02, 0.02])))[-1]
    assert "does not improve the gradient flow" in neither
