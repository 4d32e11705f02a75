"""Evci et al. 2022: lottery tickets relearn the pruning solution (pc.lottery_relearning and its findings)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import pruning_core as pc
from pruning_core.engine.masks import select_top_k
from pruning_core.presentation.findings import relearning_findings
from pruning_core.studies.relearning import RELEARNING_COLUMNS, RELEARNING_VARIANTS, masked_distance


@pytest.fixture(scope="module")
def digits():
    return pc.load_dataset("digits")


def test_masked_distance_counts_only_the_kept_weights():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "v": torch.tensor([0.0, 5.0])}
    b = {"w": torch.tensor([[1.0, 0.0], [0.0, 100.0]]), "v": torch.tensor([3.0, 1.0])}
    masks = {"w": torch.tensor([[True, True], [True, False]]), "v": torch.tensor([True, True])}
    # (2 - 0)² + (3 - 0)² + (0 - 3)² + (5 - 1)² = 4 + 9 + 9 + 16; the masked-out 4 vs 100 does not count.
    assert masked_distance(a, b, masks) == pytest.approx(math.sqrt(38))


def test_one_shot_imp_prunes_the_very_dense_solution_the_study_compares_with(digits):
    # The study's claim "the dense solution it was pruned from" rests on IMP's first round training exactly like
    # pc.train: the one-shot ticket keeps the largest trained weights of the dense network pc.train produces.
    dense = pc.MODELS["mlp"](digits.input_shape, digits.num_classes, seed=4, width=32, depth=2)
    pc.train(dense, None, digits, 2, seed=4, device="cpu").run()
    trained = {n: w.detach().abs() for n, _, w in pc.prunable_weights(dense)}
    expected = select_top_k(trained, round(0.2 * sum(t.numel() for t in trained.values())))
    ticket = pc.MODELS["mlp"](digits.input_shape, digits.num_classes, seed=4, width=32, depth=2)
    masks = pc.prune(ticket, "imp", 0.8, digits, iterations=1, seed=4, options={"epochs": 2}).masks
    assert all(torch.equal(masks[n], expected[n]) for n in expected)


def test_relearning_table_compares_every_network_with_the_pruning_solution(digits):
    table = pc.lottery_relearning("mlp", digits, 0.8, epochs=2, seed=1, device="cpu")
    assert list(table.columns) == RELEARNING_COLUMNS
    assert list(table["variant"]) == list(RELEARNING_VARIANTS)
    rows = table.set_index("variant")
    assert rows.loc["dense", "distance"] == 0 and rows.loc["dense", "disagreement"] == 0
    # The ticket starts from the dense network's own initial weights, the others from a fresh network.
    assert rows.loc["lottery", "init_distance"] == pytest.approx(rows.loc["dense", "init_distance"])
    assert rows.loc["scratch", "init_distance"] != pytest.approx(rows.loc["lottery", "init_distance"])
    assert rows.loc[["lottery", "scratch", "scratch_sparse_init"], "density"].tolist() == pytest.approx([0.2] * 3,
                                                                                                      abs=1e-4)
    sparse = rows.drop(index="dense")
    ratio = sparse["distance"] / sparse["relative_distance"]
    assert ratio.max() == pytest.approx(ratio.min())            # one reference norm for all
    assert ((sparse["disagreement"] >= 0) & (sparse["disagreement"] <= 1)).all()
    assert relearning_findings(table)


def test_relearning_checks_its_arguments(digits):
    with pytest.raises(ValueError, match="rounds must be a whole number >= 1"):
        pc.lottery_relearning("mlp", digits, 0.9, rounds=0)
    with pytest.raises(ValueError, match="sparsity must be between 0 and 1"):
        pc.lottery_relearning("mlp", digits, 1.0)
    with pytest.raises(pc.Cancelled):
        pc.lottery_relearning("mlp", digits, 0.9, epochs=1, should_stop=lambda: True)


def relearning_table(ticket_distance, ticket_disagreement):
    return pd.DataFrame([
        {"variant": "dense", "label": "d", "density": 1.0, "init_distance": 5.0, "distance": 0.0,
         "relative_distance": 0.0, "disagreement": 0.0, "test_accuracy": 0.98},
        {"variant": "lottery", "label": "l", "density": 0.1, "init_distance": 5.0, "distance": ticket_distance,
         "relative_distance": ticket_distance / 17, "disagreement": ticket_disagreement, "test_accuracy": 0.97},
        {"variant": "scratch", "label": "s", "density": 0.1, "init_distance": 19.6, "distance": 21.5,
         "relative_distance": 21.5 / 17, "disagreement": 0.05, "test_accuracy": 0.96}])


def test_relearning_findings_say_whether_the_ticket_returns_to_its_pruning_solution():
    won = relearning_findings(relearning_table(5.0, 0.01))
    assert won.startswith("**The lottery ticket relearns the solution it was pruned from**")
    assert "5.00 from the dense network's against 21.5" in won and "4.3× closer" in won
    assert "1% of the test images against 5%" in won
    half = relearning_findings(relearning_table(5.0, 0.08))
    assert "its predictions do not" in half
    lost = relearning_findings(relearning_table(30.0, 0.08))
    assert "does not end closer" in lost and "does not reproduce" in lost
    assert relearning_findings(relearning_table(5.0, 0.01).iloc[[0, 1]]) == ""
