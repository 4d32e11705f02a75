"""Tests of pruning_core.engine.methods: every score against a value computed by hand (or by torch.autograd
on an explicit formula that does not use the package), on a tiny bias-free network.

The network is pc.MODELS["mlp"]((1, 1, 3), 2, width=4, depth=1, bias=False):
    logits = W2 relu(W1 x),  W1: 4x3 ("fc1.weight"),  W2: 2x4 ("out.weight").
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pruning_core as pc
from pruning_core.engine.methods import ScoringContext

W1 = [[0.5, -1.0, 0.25],
      [1.5, 0.5, -0.5],
      [-0.75, 1.0, 2.0],
      [0.2, -0.3, 0.4]]
W2 = [[1.0, -0.5, 0.25, 2.0],
      [-1.5, 0.75, 1.0, -0.25]]
X1 = [[1.0, 0.5, -1.0], [-0.5, 2.0, 0.25], [0.3, -0.7, 1.2]]
Y1 = [0, 0, 1]
X2 = [[2.0, -1.0, 0.5], [0.1, 0.4, -0.9]]
Y2 = [0, 1]


def tiny_net(batch_norm: bool = False) -> nn.Module:
    model = pc.MODELS["mlp"]((1, 1, 3), 2, width=4, depth=1, bias=False, batch_norm=batch_norm)
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor(W1))
        model.out.weight.copy_(torch.tensor(W2))
    return model


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor(X1).view(-1, 1, 1, 3), torch.tensor(Y1)),
            (torch.tensor(X2).view(-1, 1, 1, 3), torch.tensor(Y2))]


def reference_loss(w1: torch.Tensor, w2: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sum over the two batches of the mean cross-entropy of W2 relu(W1 x) / T, in float64."""
    total = 0.0
    for x, y in ((X1, Y1), (X2, Y2)):
        x = torch.tensor(x, dtype=torch.float64)
        logits = torch.relu(x @ w1.T) @ w2.T
        total = total + F.cross_entropy(logits / temperature, torch.tensor(y))
    return total


def leaves() -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(W1, dtype=torch.float64, requires_grad=True),
            torch.tensor(W2, dtype=torch.float64, requires_grad=True))


def scores_of(method: str, **kwargs) -> pc.PruneResult:
    return pc.prune(tiny_net(kwargs.pop("batch_norm", False)), method, 0.5, batches(), iterations=1, **kwargs)


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    expected = expected.to(torch.float64)
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual.to(torch.float64), expected, rtol=rel, atol=rel * scale)


def top_half(score: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 10 highest of the 20 scores; ties go to the lower index (fc1 before out, row-major)."""
    flat = torch.cat([score["fc1.weight"].flatten(), score["out.weight"].flatten()])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.sort(flat, descending=True, stable=True).indices[:10]] = True
    return {"fc1.weight": keep[:12].view(4, 3), "out.weight": keep[12:].view(2, 4)}


# ---- data-free ----------------------------------------------------------------------------------------
def test_magnitude_scores_are_absolute_weights_and_keep_the_largest():
    result = scores_of("magnitude")
    assert torch.equal(result.scores["fc1.weight"], torch.tensor(W1).abs())
    assert torch.equal(result.scores["out.weight"], torch.tensor(W2).abs())
    # 20 weights, keep 10: the magnitudes >= 0.75 (|2.0|, |2.0|, |1.5|, |1.5|, |1.0| x4, |0.75| x2).
    kept = torch.cat([w[m] for w, m in ((torch.tensor(W1), result.masks["fc1.weight"]),
                                       (torch.tensor(W2), result.masks["out.weight"]))])
    assert sorted(kept.abs().tolist()) == [0.75, 0.75, 1.0, 1.0, 1.0, 1.0, 1.5, 1.5, 2.0, 2.0]


def test_synflow_scores_hand_computed():
    # R = 1ᵀ|W2||W1|1 for an all-ones input. Row sums of |W1| (into each hidden unit):
    r = torch.tensor([1.75, 2.5, 3.75, 0.9])
    # Column sums of |W2| (out of each hidden unit):
    c = torch.tensor([2.5, 1.25, 1.25, 2.25])
    # dR/d|W1[j, i]| = c_j,  dR/d|W2[k, j]| = r_j; R = sum_j c_j r_j = 14.2125.
    result = scores_of("synflow")
    close(result.scores["fc1.weight"], torch.tensor(W1).abs() * c[:, None])
    close(result.scores["out.weight"], torch.tensor(W2).abs() * r[None, :])
    assert float(result.scores["fc1.weight"].sum()) == pytest.approx(14.2125, rel=1e-6)
    assert float(result.scores["out.weight"].sum()) == pytest.approx(14.2125, rel=1e-6)
    # Eight scores are above 1.25 and three tie at 1.25 (|W1[0,0]| c_0, |W1[2,1]| c_2, |W2[0,1]| r_1):
    # the two lower indices fill the last two places.
    assert bool(result.masks["fc1.weight"][0, 0]) and bool(result.masks["fc1.weight"][2, 1])
    assert not bool(result.masks["out.weight"][0, 1])
    assert all(torch.equal(result.masks[n], m) for n, m in top_half(result.scores).items())


def test_synflow_uses_batch_norm_in_eval_mode_with_absolute_values():
    model = tiny_net(batch_norm=True)
    with torch.no_grad():
        model.bn1.weight.fill_(-2.0)       # |gamma| = 2
        model.bn1.running_var.fill_(4.0)   # divides by sqrt(4 + eps)
    model.train()  # a train-mode BatchNorm1d would fail on SynFlow's batch of one
    result = pc.prune(model, "synflow", 0.5, input_shape=(1, 1, 3), iterations=1)
    assert model.training
    scale = 2.0 / (4.0 + model.bn1.eps) ** 0.5
    r = torch.tensor([1.75, 2.5, 3.75, 0.9]) * scale
    c = torch.tensor([2.5, 1.25, 1.25, 2.25])
    close(result.scores["fc1.weight"], torch.tensor(W1).abs() * c[:, None] * scale)
    close(result.scores["out.weight"], torch.tensor(W2).abs() * r[None, :])


def test_synflow_rejects_an_unknown_precision():
    with pytest.raises(ValueError, match="synflow precision must be 'auto', 'float32' or 'float64', got 'half'"):
        pc.prune(tiny_net(), "synflow", 0.5, input_shape=(1, 1, 3), iterations=1, options={"precision": "half"})


def test_random_scores_are_seeded():
    torch.manual_seed(0)
    model = pc.MODELS["mlp"]((1, 4, 4), 3, width=8, depth=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def masks(seed):
        model.load_state_dict(state)
        pc.detach_masks(model)
        return pc.prune(model, "random", 0.7, input_shape=(1, 4, 4), seed=seed).masks

    a, b, c = masks(0), masks(0), masks(1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


# ---- data-driven ----------------------------------------------------------------------------------------
def test_snip_scores_match_autograd_on_the_explicit_formula():
    w1, w2 = leaves()
    g1, g2 = torch.autograd.grad(reference_loss(w1, w2), (w1, w2))
    result = scores_of("snip")
    close(result.scores["fc1.weight"], (w1 * g1).abs().detach())
    close(result.scores["out.weight"], (w2 * g2).abs().detach())
    assert all(torch.equal(result.masks[n], m) for n, m in top_half(result.scores).items())


def grasp_reference(temperature: float) -> dict[str, torch.Tensor]:
    theta = torch.cat([torch.tensor(W1, dtype=torch.float64).flatten(),
                       torch.tensor(W2, dtype=torch.float64).flatten()])

    def loss(flat):
        return reference_loss(flat[:12].view(4, 3), flat[12:].view(2, 4), temperature)

    flat = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(flat), flat)
    hessian = torch.autograd.functional.hessian(loss, theta)
    score = theta * (hessian @ g)
    return {"fc1.weight": score[:12].view(4, 3), "out.weight": score[12:].view(2, 4)}


def test_grasp_scores_are_theta_times_hessian_gradient_product_at_temperature_200():
    expected = grasp_reference(200.0)
    result = scores_of("grasp")
    for name in expected:
        close(result.scores[name], expected[name], rel=1e-3)
    # Higher is kept and the score is signed: the kept weights are the 10 largest theta*Hg (the paper
    # removes the largest -theta*Hg), not the 10 largest |theta*Hg|.
    signed = top_half(expected)
    absolute = top_half({n: s.abs() for n, s in expected.items()})
    assert any(not torch.equal(signed[n], absolute[n]) for n in signed)  # the example tells them apart
    assert all(torch.equal(result.masks[n], signed[n]) for n in signed)
    by_magnitude = scores_of("grasp", options={"absolute": True})
    assert all(torch.equal(by_magnitude.masks[n], absolute[n]) for n in absolute)
    for name in expected:
        close(by_magnitude.scores[name], expected[name].abs(), rel=1e-3)


def test_grasp_temperature_option():
    expected = grasp_reference(1.0)
    result = scores_of("grasp", options={"temperature": 1.0})
    for name in expected:
        close(result.scores[name], expected[name], rel=1e-3)


def context(model: nn.Module) -> ScoringContext:
    weights = {name: w for name, _, w in pc.prunable_weights(model)}
    return ScoringContext(model=model, weights=weights, batches=batches(), input_shape=(1, 1, 3),
                          generator=torch.Generator().manual_seed(0))


PRUNED = {"fc1.weight": torch.tensor([[True, False, True], [True, True, False], [False, True, True],
                                      [True, True, True]]),
          "out.weight": torch.tensor([[True, True, False, True], [False, True, True, True]])}


def test_force_ranks_pruned_weights_by_theta0_times_gradient_at_the_pruned_network():
    w1, w2 = leaves()
    m1, m2 = PRUNED["fc1.weight"], PRUNED["out.weight"]
    pruned_w1 = (w1.detach() * m1).requires_grad_(True)
    pruned_w2 = (w2.detach() * m2).requires_grad_(True)
    g1, g2 = torch.autograd.grad(reference_loss(pruned_w1, pruned_w2), (pruned_w1, pruned_w2))
    model = tiny_net()
    scores = pc.METHODS["force"].score(context(model), PRUNED)
    # Every weight, pruned or not, is scored with its original value theta0.
    close(scores["fc1.weight"], (w1 * g1).abs().detach())
    close(scores["out.weight"], (w2 * g2).abs().detach())
    assert bool((scores["fc1.weight"][~m1] > 0).all())  # pruned weights are candidates
    assert torch.equal(model.fc1.weight.detach(), torch.tensor(W1))  # scoring does not touch the model

    snip = pc.METHODS["iter_snip"].score(context(model), PRUNED)
    close(snip["fc1.weight"], (pruned_w1 * g1).abs().detach())
    assert bool((snip["fc1.weight"][~m1] == 0).all()) and bool((snip["out.weight"][~m2] == 0).all())


def test_snip_sums_over_the_pruning_batches():
    w1, w2 = leaves()
    x, y = batches()[0]
    logits = torch.relu(torch.tensor(X1, dtype=torch.float64) @ w1.T) @ w2.T
    g1, _ = torch.autograd.grad(F.cross_entropy(logits, y), (w1, w2))
    one = pc.prune(tiny_net(), "snip", 0.5, [(x, y)], iterations=1)
    close(one.scores["fc1.weight"], (w1 * g1).abs().detach())
    both = scores_of("snip")
    assert not torch.allclose(one.scores["fc1.weight"], both.scores["fc1.weight"])


# ---- registry metadata ------------------------------------------------------------------------------------
def test_method_registry_metadata():
    for name, spec in pc.METHODS.items():
        assert spec.name == name
        assert spec.label and spec.summary and spec.paper and spec.formula
        assert len(spec.explanation) > 50, f"{name} needs a docstring that explains its score"
        assert spec.score is not None or spec.run is not None
    data_driven = {n for n, s in pc.METHODS.items() if s.needs_data}
    assert {"snip", "grasp", "iter_snip", "force"} <= data_driven
    assert not {"random", "random_erk", "magnitude", "synflow"} & data_driven
    assert pc.METHODS["synflow"].default_iterations == 100
    assert pc.METHODS["force"].revives and not pc.METHODS["iter_snip"].revives
    assert pc.METHODS["grasp"].balanced_data
