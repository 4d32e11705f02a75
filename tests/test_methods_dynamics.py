"""Tests of pruning_core.engine.methods_dynamics (SynFlow-L2, PX, NTK-SAP, ProsPr): every score against
hand-computed values, explicit path sums or finite differences of the paper's objective written out
here in float64 without the package; exact kept counts; bad options; determinism.

The network is pc.MODELS["mlp"]((1, 1, 3), 2, width=4, depth=1, bias=False):
    logits = W2 relu(W1 x),  W1: 4x3 ("fc1.weight"),  W2: 2x4 ("out.weight").
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pruning_core as pc
from pruning_core.engine import methods_dynamics as md
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
SHAPE = (1, 1, 3)
NEW_METHODS = ["synflow_l2", "px", "ntk_sap", "prospr"]
PRUNED = {"fc1.weight": torch.tensor([[True, False, True], [True, True, False], [False, True, True],
                                      [True, True, True]]),
          "out.weight": torch.tensor([[True, True, False, True], [False, True, True, True]])}


def tiny_net(batch_norm: bool = False) -> nn.Module:
    model = pc.MODELS["mlp"](SHAPE, 2, width=4, depth=1, bias=False, batch_norm=batch_norm)
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor(W1))
        model.out.weight.copy_(torch.tensor(W2))
    return model


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor(X1).view(-1, *SHAPE), torch.tensor(Y1)),
            (torch.tensor(X2).view(-1, *SHAPE), torch.tensor(Y2))]


def context(model: nn.Module, **kwargs) -> ScoringContext:
    weights = {name: w for name, _, w in pc.prunable_weights(model)}
    return ScoringContext(model=model, weights=weights, batches=batches(), input_shape=SHAPE,
                          generator=torch.Generator().manual_seed(0), **kwargs)


def all_kept() -> dict[str, torch.Tensor]:
    return {"fc1.weight": torch.ones(4, 3, dtype=torch.bool), "out.weight": torch.ones(2, 4, dtype=torch.bool)}


def double(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    expected = expected.to(torch.float64)
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual.detach().to(torch.float64), expected, rtol=rel, atol=rel * scale)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert pc.attached_masks(model) == {}


# ---- SynFlow-L2 -------------------------------------------------------------------------------------------
def test_synflow_l2_scores_hand_computed():
    # R2 = 1ᵀ W2² W1² 1. Row sums of W1² (into each hidden unit) and column sums of W2² (out of it):
    r = double([1.3125, 2.75, 5.5625, 0.29])
    c = double([3.25, 0.8125, 1.0625, 4.0625])
    # dR2/dW1[j, i]² = c_j, dR2/dW2[k, j]² = r_j; R2 = sum_j r_j c_j = 13.58828125.
    result = pc.prune(tiny_net(), "synflow_l2", 0.5, input_shape=SHAPE, iterations=1)
    close(result.scores["fc1.weight"], double(W1).square() * c[:, None])
    close(result.scores["out.weight"], double(W2).square() * r[None, :])
    for name in result.scores:  # conservation: each layer's scores sum to R2
        assert float(result.scores[name].sum()) == pytest.approx(13.58828125, rel=1e-6)
    # Squares, not absolute values: keeping 2 of 20, SynFlow-L2 keeps W2[1,2] (1 x 5.5625) and W1[2,2]
    # (4 x 1.0625); SynFlow keeps W2[1,2] (1 x 3.75) and W2[1,0] (1.5 x 1.75) over W1[2,2] (2 x 1.25).
    l2 = pc.prune(tiny_net(), "synflow_l2", 0.9, input_shape=SHAPE, iterations=1)
    synflow = pc.prune(tiny_net(), "synflow", 0.9, input_shape=SHAPE, iterations=1)
    assert l2.masks["out.weight"].nonzero().tolist() == [[1, 2]]
    assert l2.masks["fc1.weight"].nonzero().tolist() == [[2, 2]]
    assert synflow.masks["out.weight"].nonzero().tolist() == [[1, 0], [1, 2]] and not synflow.masks["fc1.weight"].any()


def test_synflow_l2_equals_an_explicit_sum_over_paths():
    w1, w2 = double(W1), double(W2)
    expected = {"fc1.weight": torch.zeros(4, 3, dtype=torch.float64),
                "out.weight": torch.zeros(2, 4, dtype=torch.float64)}
    for i, j, k in itertools.product(range(3), range(4), range(2)):   # path input i -> hidden j -> output k
        value = w1[j, i] ** 2 * w2[k, j] ** 2
        expected["fc1.weight"][j, i] += value
        expected["out.weight"][k, j] += value
    result = pc.prune(tiny_net(), "synflow_l2", 0.5, input_shape=SHAPE, iterations=1)
    for name, value in expected.items():
        close(result.scores[name], value)


def test_synflow_l2_squares_batch_norm_scale():
    model = tiny_net(batch_norm=True)
    with torch.no_grad():
        model.bn1.weight.fill_(-2.0)      # gamma² = 4
        model.bn1.running_var.fill_(9.0)  # sigma = 3: squared scale (2/3)² = 4 / sqrt(81 + eps)
    model.train()
    result = pc.prune(model, "synflow_l2", 0.5, input_shape=SHAPE, iterations=1)
    assert model.training
    scale = 4.0 / (81.0 + model.bn1.eps) ** 0.5
    r = double([1.3125, 2.75, 5.5625, 0.29]) * scale
    c = double([3.25, 0.8125, 1.0625, 4.0625])
    close(result.scores["fc1.weight"], double(W1).square() * c[:, None] * scale)
    close(result.scores["out.weight"], double(W2).square() * r[None, :])


def deep_small_mlp() -> nn.Module:
    """Eight bias-free layers with tiny weights: the squared-weight flow underflows float32 (~1e-60)."""
    torch.manual_seed(0)
    model = pc.MODELS["mlp"](SHAPE, 2, width=4, depth=7, bias=False)
    with torch.no_grad():
        for _, _, weight in pc.prunable_weights(model):
            weight.mul_(1e-3)
    return model


@pytest.mark.parametrize("method", ["synflow_l2", "px"])
def test_squared_flow_falls_back_to_float64_instead_of_underflowing(method):
    auto = pc.prune(deep_small_mlp(), method, 0.5, batches(), iterations=2)
    forced = pc.prune(deep_small_mlp(), method, 0.5, batches(), iterations=2, options={"precision": "float64"})
    for name in auto.scores:
        assert auto.scores[name].dtype == torch.float64
        assert torch.equal(auto.masks[name], forced.masks[name])
        close(auto.scores[name], forced.scores[name], rel=1e-9)
    kept_scores = torch.cat([s[auto.masks[n]] for n, s in auto.scores.items()])
    assert bool((kept_scores > 0).all())
    with pytest.raises(ValueError, match=f"{method} precision must be 'auto', 'float32' or 'float64', got 'half'"):
        pc.prune(tiny_net(), method, 0.5, batches(), options={"precision": "half"})


# ---- PX ----------------------------------------------------------------------------------------------------
def px_reference(mask1: torch.Tensor, mask2: torch.Tensor) -> dict[str, torch.Tensor]:
    """Explicit path sums. Data term: w_k = Σ over samples and paths i -> j -> k kept by the mask of
    x_i² a_j(x), a_j(x) = 1[(W1 ⊙ m1) x]_j > 0 on the pruned network, then scaled to max 1. Path term:
    R = Σ_k w_k Σ over paths i -> j -> k of W1[j,i]² W2[k,j]²; a weight scores the part of R through it."""
    w1, w2 = double(W1) * mask1, double(W2) * mask2
    m1, m2 = mask1.double(), mask2.double()
    data = torch.zeros(2, dtype=torch.float64)
    for x in double(X1 + X2):
        gate = (w1 @ x > 0).double()
        for i, j, k in itertools.product(range(3), range(4), range(2)):
            data[k] += x[i] ** 2 * m1[j, i] * gate[j] * m2[k, j]
    data = data / data.max()
    expected = {"fc1.weight": torch.zeros(4, 3, dtype=torch.float64),
                "out.weight": torch.zeros(2, 4, dtype=torch.float64)}
    for i, j, k in itertools.product(range(3), range(4), range(2)):
        value = data[k] * w1[j, i] ** 2 * w2[k, j] ** 2
        expected["fc1.weight"][j, i] += value
        expected["out.weight"][k, j] += value
    return expected


def test_px_scores_equal_the_explicit_path_sums_and_start_as_synflow_l2():
    expected = px_reference(torch.ones(4, 3), torch.ones(2, 4))
    result = pc.prune(tiny_net(), "px", 0.5, batches(), iterations=1)
    for name, value in expected.items():
        close(result.scores[name], value)
    r = float(expected["out.weight"].sum())
    assert float(result.scores["fc1.weight"].sum()) == pytest.approx(r, rel=1e-6)  # conservation
    # Dense, both outputs are reached by the same gated paths (w = (1, 1)): the first round is SynFlow-L2's.
    synflow_l2 = pc.prune(tiny_net(), "synflow_l2", 0.5, input_shape=SHAPE, iterations=1)
    for name in result.scores:
        close(result.scores[name], synflow_l2.scores[name])


def test_px_weighs_outputs_by_the_pruned_networks_active_paths_and_pruned_weights_score_zero():
    model = tiny_net()
    scores = pc.METHODS["px"].score(context(model), PRUNED)
    expected = px_reference(PRUNED["fc1.weight"], PRUNED["out.weight"])
    for name in expected:
        close(scores[name], expected[name])
        assert bool((scores[name][~PRUNED[name]] == 0).all())
    # On the pruned network the two outputs get different data weights: PX is no longer SynFlow-L2.
    synflow_l2 = pc.METHODS["synflow_l2"].score(context(tiny_net()), PRUNED)
    # Each output row is SynFlow-L2's times that output's w: constant along a row, different between rows.
    kept = PRUNED["out.weight"]
    rows = [(scores["out.weight"][k] / synflow_l2["out.weight"][k])[kept[k]] for k in range(2)]
    assert all(float(row.max() - row.min()) < 1e-6 for row in rows)
    assert abs(float(rows[0][0] - rows[1][0])) > 0.05
    assert torch.equal(model.fc1.weight.detach(), torch.tensor(W1))
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())


def test_px_data_term_counts_the_gated_paths_of_the_inputs_squared():
    # w_k by hand for the first sample alone: x² = (1, 0.25, 1) and W1 x = (-0.25, 2.25, -2.25, -0.35), so
    # only hidden unit 1 is open; each output reaches it and gets Σ_i x_i² = 2.25: w = (2.25, 2.25).
    ctx = dataclasses.replace(context(tiny_net()), batches=[(torch.tensor([X1[0]]).view(1, *SHAPE), torch.tensor([0]))])
    data = md.px_data_term(ctx, all_kept())
    close(data, double([2.25, 2.25]))
    # Pruning W2[0, 1] cuts output 0 from the open unit: w = (0, 2.25).
    masks = {**all_kept(), "out.weight": torch.tensor([[True, False, True, True], [True, True, True, True]])}
    close(md.px_data_term(ctx, masks), double([0.0, 2.25]))


def test_relu_identity_makes_in_place_relus_linear_for_one_pass():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(inplace=True), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0]])
    with md.ReluIdentity(model):
        assert model(x).item() == -1.0          # 1 + (-2): the negative unit passes
    assert model(x).item() == 1.0               # ReLU again afterwards
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_relu_gates_replay_one_pattern_per_call_of_a_shared_relu():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(2, 2, bias=False), relu, nn.Linear(2, 2, bias=False), relu)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[-1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, -2.0]])
    with md.ReluGates(model) as gates:
        model(x)                                  # first ReLU passes (1, 2), second blocks unit 0
        assert [p.tolist() for p in gates.patterns] == [[[True, True]], [[False, True]]]
        gates.replay()
        with torch.no_grad():
            model[0].weight.copy_(torch.eye(2))
            model[2].weight.copy_(torch.eye(2))
        assert model(torch.tensor([[3.0, 4.0]])).tolist() == [[0.0, 4.0]]  # fixed gates, not ReLU's own
    assert model(torch.tensor([[3.0, 4.0]])).tolist() == [[3.0, 4.0]]      # hooks removed afterwards


# ---- NTK-SAP -----------------------------------------------------------------------------------------------
def ntk_objective(c1, c2, theta, delta, x, epsilon):
    """Φ(c) = mean over x of ‖f(x; θ ⊙ c) − f(x; (θ + εδ) ⊙ c)‖² / ε², f = W2 relu(W1 x), in float64."""
    def f(w1, w2):
        return torch.relu(x @ w1.T) @ w2.T

    plain = f(theta[0] * c1, theta[1] * c2)
    moved = f((theta[0] + epsilon * delta[0]) * c1, (theta[1] + epsilon * delta[1]) * c2)
    return (plain - moved).square().sum() / (x.shape[0] * epsilon ** 2)


def draws_in_float64(model, generator, batch_size=4):
    weights = {name: w for name, _, w in pc.prunable_weights(model)}
    spreads = {n: float(w.detach().std()) for n, w in weights.items()}
    thetas, deltas, x = md.ntk_sap_draws(weights, spreads, SHAPE, batch_size, generator)
    return ((thetas["fc1.weight"].double(), thetas["out.weight"].double()),
            (deltas["fc1.weight"].double(), deltas["out.weight"].double()), x.double().flatten(1), (thetas, deltas, x))


def test_ntk_sap_saliency_matches_finite_differences_of_the_objective():
    model = tiny_net()
    theta, delta, x, raw = draws_in_float64(model, torch.Generator().manual_seed(3))
    masks = PRUNED
    saliency = md.ntk_sap_saliency(context(model), masks, *raw, epsilon=0.01)
    c = [masks["fc1.weight"].double(), masks["out.weight"].double()]
    step = 1e-5
    for index, name in enumerate(["fc1.weight", "out.weight"]):
        expected = torch.zeros_like(c[index])
        for position in itertools.product(*map(range, c[index].shape)):
            up, down = [t.clone() for t in c], [t.clone() for t in c]
            up[index][position] += step
            down[index][position] -= step
            expected[position] = (ntk_objective(*up, theta, delta, x, 0.01)
                                  - ntk_objective(*down, theta, delta, x, 0.01)) / (2 * step)
        close(saliency[name], expected, rel=1e-3)
    # Each layer's mask enters f linearly (ReLU is 1-homogeneous), so Φ is 2-homogeneous in it:
    # Σ over a layer's kept weights of m ∂Φ/∂m = 2Φ, for every layer.
    phi = float(ntk_objective(*c, theta, delta, x, 0.01))
    for name in saliency:
        assert float((saliency[name] * masks[name]).sum()) == pytest.approx(2 * phi, rel=1e-3)


def test_ntk_sap_averages_the_draws_before_the_absolute_value_and_zeroes_pruned_weights():
    model = tiny_net()
    result = pc.prune(model, "ntk_sap", 0.5, input_shape=SHAPE, iterations=1, seed=5,
                      options={"redraws": 3, "batch_size": 2})
    generator = torch.Generator().manual_seed(5)   # data-free: pc.prune draws nothing before scoring
    total = [torch.zeros(4, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)]
    for _ in range(3):
        theta, delta, x, _ = draws_in_float64(tiny_net(), generator, batch_size=2)
        c = [torch.ones(4, 3, dtype=torch.float64, requires_grad=True),
             torch.ones(2, 4, dtype=torch.float64, requires_grad=True)]
        grads = torch.autograd.grad(ntk_objective(*c, theta, delta, x, 0.01), c)
        total = [t + g / 3 for t, g in zip(total, grads)]
    close(result.scores["fc1.weight"], total[0].abs(), rel=1e-4)
    close(result.scores["out.weight"], total[1].abs(), rel=1e-4)
    # Later rounds score on the pruned network: pruned weights score exactly 0.
    scores = pc.METHODS["ntk_sap"].score(context(tiny_net()), PRUNED)
    assert all(bool((scores[n][~PRUNED[n]] == 0).all()) and bool((scores[n][PRUNED[n]] > 0).all()) for n in scores)


def test_ntk_sap_redraws_the_weights_so_the_models_own_values_only_set_the_spread():
    # Same spreads, different values (a sign flip): the same draws, the same masks.
    flipped = tiny_net()
    with torch.no_grad():
        flipped.fc1.weight.neg_()
    a = pc.prune(tiny_net(), "ntk_sap", 0.5, input_shape=SHAPE, iterations=2)
    b = pc.prune(flipped, "ntk_sap", 0.5, input_shape=SHAPE, iterations=2)
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)


def ntk_objective_batch_norm(c1, c2, theta, delta, x, epsilon, eps=1e-5):
    """Φ with a BatchNorm between W1 and the ReLU (γ = 1, β = 0) whose statistics are the batch mean and
    unbiased variance of the unperturbed draw θ ⊙ c on x, held fixed (no gradient) for both passes."""
    with torch.no_grad():
        z = x @ (theta[0] * c1).T
        mean, var = z.mean(0), z.var(0, unbiased=True)

    def f(w1, w2):
        return torch.relu((x @ w1.T - mean) / torch.sqrt(var + eps)) @ w2.T

    plain = f(theta[0] * c1, theta[1] * c2)
    moved = f((theta[0] + epsilon * delta[0]) * c1, (theta[1] + epsilon * delta[1]) * c2)
    return (plain - moved).square().sum() / (x.shape[0] * epsilon ** 2)


def test_ntk_sap_takes_batch_norm_statistics_from_each_draw_not_from_the_model():
    model = tiny_net(batch_norm=True)
    odd = tiny_net(batch_norm=True)
    with torch.no_grad():                   # the model's own statistics must not matter
        odd.bn1.running_mean.fill_(5.0)
        odd.bn1.running_var.fill_(100.0)
    before = snapshot(odd)
    theta, delta, x, raw = draws_in_float64(model, torch.Generator().manual_seed(7))
    saliency = md.ntk_sap_saliency(context(model), PRUNED, *raw, epsilon=0.01)
    again = md.ntk_sap_saliency(context(odd), PRUNED, *raw, epsilon=0.01)
    c = [PRUNED["fc1.weight"].double().requires_grad_(True), PRUNED["out.weight"].double().requires_grad_(True)]
    expected = torch.autograd.grad(ntk_objective_batch_norm(*c, theta, delta, x, 0.01), c)
    for index, name in enumerate(["fc1.weight", "out.weight"]):
        close(saliency[name], expected[index], rel=1e-3)
        assert torch.equal(saliency[name], again[name])
    assert_unchanged(odd, before)
    assert odd.bn1.momentum == 0.1
    with pytest.raises(ValueError, match="batch_size must be at least 2 for a network with BatchNorm"):
        pc.prune(odd, "ntk_sap", 0.5, input_shape=SHAPE, options={"batch_size": 1})
    assert_unchanged(odd, before)
    # Without recalibration, eval-mode BatchNorm uses the model's statistics: the odd ones change the scores.
    plain = md.ntk_sap_saliency(context(model), PRUNED, *raw, epsilon=0.01, recalibrate=False)
    skewed = md.ntk_sap_saliency(context(odd), PRUNED, *raw, epsilon=0.01, recalibrate=False)
    assert not torch.allclose(plain["fc1.weight"], skewed["fc1.weight"])
    assert not torch.allclose(plain["fc1.weight"], saliency["fc1.weight"])


@pytest.mark.parametrize("options, message", [
    ({"epsilon": 0}, "ntk_sap option epsilon must be a number > 0, got 0"),
    ({"epsilon": float("nan")}, "ntk_sap option epsilon must be a number > 0, got nan"),
    ({"redraws": 1.5}, "ntk_sap option redraws must be a whole number >= 1, got 1.5"),
    ({"batch_size": 0}, "ntk_sap option batch_size must be a whole number >= 1, got 0"),
    ({"batch_size": True}, "ntk_sap option batch_size must be a whole number >= 1, got True"),
    ({"recalibrate_batch_norm": "no"}, "ntk_sap option recalibrate_batch_norm must be True or False, got 'no'"),
])
def test_ntk_sap_rejects_bad_options_and_leaves_the_model_untouched(options, message):
    model = tiny_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pc.prune(model, "ntk_sap", 0.5, input_shape=SHAPE, options=options)
    assert_unchanged(model, before)


# ---- ProsPr ------------------------------------------------------------------------------------------------
def prospr_meta_loss(c1, c2, mask1, mask2, steps=3, lr=0.01, batch_norm=False):
    """L(θ_M) on the next batch after M masked SGD steps from θ₀ = c ⊙ m ⊙ θ, batches used in turn; with
    batch_norm, a train-mode BatchNorm (batch mean and biased variance, eps 1e-5) whose γ, β take the steps too."""
    data = [(double(X1), torch.tensor(Y1)), (double(X2), torch.tensor(Y2))]
    params = [double(W1) * mask1 * c1, double(W2) * mask2 * c2]
    if batch_norm:
        params += [torch.ones(4, dtype=torch.float64, requires_grad=True),
                   torch.zeros(4, dtype=torch.float64, requires_grad=True)]
    step_masks = [mask1, mask2, 1.0, 1.0]

    def loss(weights, batch):
        x, y = data[batch % 2]
        z = x @ weights[0].T
        if batch_norm:
            z = weights[2] * (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5) + weights[3]
        return F.cross_entropy(torch.relu(z) @ weights[1].T, y)

    for step in range(steps):
        grads = torch.autograd.grad(loss(params, step), params, create_graph=True)
        params = [w - lr * g * m for w, g, m in zip(params, grads, step_masks)]
    return loss(params, steps)


def finite_difference_scores(mask1, mask2, **kwargs) -> dict[str, torch.Tensor]:
    ones = [torch.ones(4, 3, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64)]
    masks = [mask1.double(), mask2.double()]
    step = 1e-5
    out = {}
    for index, name in enumerate(["fc1.weight", "out.weight"]):
        grad = torch.zeros_like(ones[index])
        for position in itertools.product(*map(range, grad.shape)):
            up, down = [t.clone().requires_grad_(True) for t in ones], [t.clone().requires_grad_(True) for t in ones]
            with torch.no_grad():
                up[index][position] += step
                down[index][position] -= step
            difference = prospr_meta_loss(*up, *masks, **kwargs) - prospr_meta_loss(*down, *masks, **kwargs)
            grad[position] = difference.detach() / (2 * step)
        out[name] = grad.abs()
    return out


def test_prospr_scores_match_finite_differences_of_the_loss_after_three_sgd_steps():
    expected = finite_difference_scores(torch.ones(4, 3), torch.ones(2, 4))
    result = pc.prune(tiny_net(), "prospr", 0.5, batches())
    assert result.iterations == 1   # one-shot by default, as published
    for name in expected:
        close(result.scores[name], expected[name], rel=1e-3)
    # Three training steps change the ranking: it is not SNIP's.
    snip = pc.prune(tiny_net(), "snip", 0.5, batches(), iterations=1)
    assert any(not torch.equal(result.masks[n], snip.masks[n]) for n in result.masks)


def test_prospr_keeps_pruned_weights_at_zero_through_the_inner_steps():
    expected = finite_difference_scores(PRUNED["fc1.weight"], PRUNED["out.weight"], steps=2, lr=0.5)
    scores = pc.METHODS["prospr"].score(context(tiny_net(), options={"steps": 2, "lr": 0.5}), PRUNED)
    for name in expected:
        close(scores[name], expected[name], rel=1e-3)
        assert bool((scores[name][~PRUNED[name]] == 0).all())


def test_prospr_with_a_vanishing_learning_rate_is_snip_on_the_final_batch():
    x, y = batches()[1]   # steps=1 on two batches: the step uses batch 0, the loss batch 1
    prospr = pc.prune(tiny_net(), "prospr", 0.5, batches(), options={"steps": 1, "lr": 1e-9})
    snip = pc.prune(tiny_net(), "snip", 0.5, [(x, y)], iterations=1)
    for name in snip.scores:
        close(prospr.scores[name], snip.scores[name], rel=1e-5)


def test_prospr_trains_batch_norm_on_batch_statistics_and_leaves_the_running_ones():
    expected = finite_difference_scores(torch.ones(4, 3), torch.ones(2, 4), batch_norm=True, lr=0.1)
    for train_mode in (False, True):   # the inner steps are training steps either way
        model = tiny_net(batch_norm=True)
        model.eval()
        statistics = {k: v.clone() for k, v in model.bn1.state_dict().items()}
        result = pc.prune(model, "prospr", 0.5, batches(), train_mode=train_mode, options={"lr": 0.1})
        for name in expected:
            close(result.scores[name], expected[name], rel=1e-3)
        assert not model.training
        assert all(torch.equal(model.bn1.state_dict()[k], v) for k, v in statistics.items())


def test_prospr_says_when_its_inner_steps_diverge_and_leaves_the_model_untouched():
    model = tiny_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"prospr's 3 inner training steps diverged \(loss nan\): lower its "
                                         r"learning rate, options=\{'lr': ...\} \(now 1e\+30\)"):
        pc.prune(model, "prospr", 0.5, batches(), options={"lr": 1e30})
    assert_unchanged(model, before)


@pytest.mark.parametrize("options, message", [
    ({"steps": 0}, "prospr option steps must be a whole number >= 1, got 0"),
    ({"lr": -0.1}, "prospr option lr must be a number > 0, got -0.1"),
    ({"lr": "fast"}, "prospr option lr must be a number > 0, got 'fast'"),
])
def test_prospr_rejects_bad_options_and_leaves_the_model_untouched(options, message):
    model = tiny_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        pc.prune(model, "prospr", 0.5, batches(), options=options)
    assert_unchanged(model, before)


# ---- all four: counts, data, determinism, registry ------------------------------------------------------------
def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return pc.MODELS["conv"]((1, 4, 4), 3, width=2)


def cnn_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(6, 1, 4, 4, generator=generator), torch.arange(6) % 3) for _ in range(2)]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("method", NEW_METHODS)
def test_exact_kept_counts_in_both_scopes(method, scope):
    model = small_cnn()
    result = pc.prune(model, method, 0.9, cnn_batches(), iterations=3, scope=scope)
    totals = {n: m.numel() for n, m in result.masks.items()}
    assert sum(int(m.sum()) for m in result.masks.values()) == round(0.1 * sum(totals.values()))
    if scope == "layerwise":
        for name, mask in result.masks.items():
            assert abs(int(mask.sum()) - 0.1 * totals[name]) < 1, name
    params = dict(model.named_parameters())
    assert all(bool((params[n][~m] == 0).all()) for n, m in result.masks.items())


@pytest.mark.parametrize("method", NEW_METHODS)
def test_deterministic_for_a_fixed_seed(method):
    first = pc.prune(small_cnn(), method, 0.8, cnn_batches(), iterations=2, seed=1)
    again = pc.prune(small_cnn(), method, 0.8, cnn_batches(), iterations=2, seed=1)
    for name in first.masks:
        assert torch.equal(first.masks[name], again.masks[name])
        assert torch.equal(first.scores[name], again.scores[name])
    if method == "ntk_sap":   # the only one that draws random numbers
        other = pc.prune(small_cnn(), method, 0.8, cnn_batches(), iterations=2, seed=2)
        assert any(not torch.equal(first.scores[n], other.scores[n]) for n in first.scores)


@pytest.mark.parametrize("method", ["px", "prospr"])
def test_data_driven_methods_need_data_and_name_the_data_free_ones(method):
    model = tiny_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match="scores weights on training data") as info:
        pc.prune(model, method, 0.5, input_shape=SHAPE)
    assert "synflow_l2" in str(info.value) and "ntk_sap" in str(info.value)
    assert_unchanged(model, before)


def test_registry_entries():
    assert list(pc.METHODS).index("synflow") < list(pc.METHODS).index("synflow_l2")
    expected = {"synflow_l2": (False, 100, "Gebhart"), "px": (True, 100, "Iurada"),
                "ntk_sap": (False, 20, "Wang"), "prospr": (True, 1, "Alizadeh")}
    for name, (needs_data, rounds, author) in expected.items():
        spec = pc.METHODS[name]
        assert (spec.needs_data, spec.default_iterations, spec.paper.split()[0]) == (needs_data, rounds, author)
        assert not spec.revives and spec.layer_densities is None and spec.run is None
    assert "2M + 1" in pc.METHODS["prospr"].explanation   # the memory cost is documented
    assert "ε = 0.01" in pc.METHODS["ntk_sap"].explanation
