"""Tests of pc.prune: every method, schedule and scope; the attached masks under training; layer
collapse; SynFlow's precision; iterative methods; sanity checks; bad input; cancelling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruning_core as pc
from pruning_core.engine.masks import round_densities, select_top_k

SHAPE = (1, 4, 4)
CLASSES = 3
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def conv_net(seed: int = 0, device: str = "cpu") -> nn.Module:
    """Three 3x3 convs with BatchNorm (18, 72, 288 weights) and a linear classifier with a bias (24)."""
    torch.manual_seed(seed)
    return pc.MODELS["conv"](SHAPE, CLASSES, width=2).to(device)


def mlp(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return pc.MODELS["mlp"](SHAPE, CLASSES, **{"width": 8, "depth": 2, **kwargs})


def data(device: str = "cpu", n: int = 12, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE, generator=gen)
    y = torch.arange(n) % CLASSES
    half = n // 2
    return [(x[:half].to(device), y[:half].to(device)), (x[half:].to(device), y[half:].to(device))]


def tiny_dataset():
    """A pc Dataset of noise images (12 per class): the methods that train to find their masks (IMP,
    GemMiner: MethodSpec.run) need one, plain batches are not enough."""
    return pc.load_dataset("synthetic", shape=SHAPE, num_classes=CLASSES, train_size=36, test_size=12)


def prune_any(model: nn.Module, method: str, sparsity: float, device: str = "cpu", **kwargs) -> pc.PruneResult:
    """pc.prune with data every registered method accepts: two batches for the scoring methods, a tiny
    dataset and one short epoch for the whole-procedure methods."""
    if pc.METHODS[method].run is not None:
        return pc.prune(model, method, sparsity, tiny_dataset(), options={"epochs": 1, "batch_size": 12}, **kwargs)
    return pc.prune(model, method, sparsity, data(device), **kwargs)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert pc.attached_masks(model) == {}
    assert not any(name.endswith("weight_mask") for name, _ in model.named_buffers())


def kept(masks) -> int:
    return sum(int(m.sum()) for m in masks.values())


# ---- every method x schedule x scope ----------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("schedule", ["linear", "exponential"])
@pytest.mark.parametrize("method", list(pc.METHODS))
def test_prune_reaches_the_requested_sparsity_and_zeroes_exactly_the_pruned_weights(method, schedule, scope):
    model = conv_net()
    before = snapshot(model)
    prunable = pc.prunable_weights(model)
    names = [n for n, _, _ in prunable]
    sparsity = 0.8
    result = prune_any(model, method, sparsity, schedule=schedule, iterations=3, scope=scope)

    masks = result.masks
    assert list(masks) == names
    params = dict(model.named_parameters())
    for name in names:
        assert masks[name].dtype == torch.bool
        assert masks[name].shape == params[name].shape
        assert masks[name].device == params[name].device
    total = sum(w.numel() for _, _, w in prunable)
    assert kept(masks) == round((1 - sparsity) * total)

    spec = pc.METHODS[method]
    shapes = [tuple(w.shape) for _, _, w in prunable]
    if spec.layer_densities is not None:
        layer_density = spec.layer_densities(shapes, 1 - sparsity)   # the method fixes its layer densities
    elif scope == "layerwise":
        layer_density = [1 - sparsity] * len(names)
    else:
        layer_density = None
    if layer_density is not None:
        for name, d in zip(names, layer_density):
            assert abs(int(masks[name].sum()) - d * masks[name].numel()) < 1, name

    # Pruned weights are zero, kept weights keep their initial values, everything else is untouched.
    for key, value in model.state_dict().items():
        if key in masks:
            assert torch.equal(value, before[key] * masks[key]), key
        else:
            assert torch.equal(value, before[key]), key  # biases, BatchNorm weights and statistics
    attached = pc.attached_masks(model)
    assert set(attached) == set(names) and all(torch.equal(attached[n], masks[n]) for n in names)

    assert result.method == method and result.schedule == schedule and result.scope == scope
    assert result.sparsity == sparsity and result.iterations == 3
    assert result.round_densities == pytest.approx(round_densities(0.2, 3, schedule))
    assert result.density == pytest.approx(kept(masks) / total)
    assert result.compression == pytest.approx(total / kept(masks))
    assert set(result.scores) == set(names)
    assert list(result.layers["name"]) == names and list(result.layers["kept"]) == [int(masks[n].sum()) for n in names]


def test_layerwise_iterative_pruning_keeps_the_exact_total_when_rounding_asks_a_layer_for_more():
    # Layers of 4, 12 and 12 weights at 90% sparsity in 5 exponential rounds: the first layer is empty
    # after round 4, yet the last round's rounding gives it 0.4 -> 1 weight; the weight must go elsewhere.
    torch.manual_seed(0)
    model = pc.engine.models.kaiming_init(nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False), nn.ReLU(),
                                                 nn.Linear(2, 6, bias=False), nn.ReLU(), nn.Linear(6, 2, bias=False)))
    result = pc.prune(model, "magnitude", 0.9, input_shape=(1, 1, 2), iterations=5, scope="layerwise")
    assert kept(result.masks) == round(0.1 * 28) == 3
    for mask in result.masks.values():
        assert abs(int(mask.sum()) - 0.1 * mask.numel()) < 1


def test_default_iterations_and_one_round_per_schedule_step():
    model = mlp()
    result = pc.prune(model, "synflow", 0.9, input_shape=SHAPE)
    assert result.iterations == pc.METHODS["synflow"].default_iterations == 100
    assert len(result.round_densities) == 100
    calls = []
    pc.prune(mlp(), "magnitude", 0.9, input_shape=SHAPE, iterations=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_zero_sparsity_keeps_everything():
    model = mlp()
    before = snapshot(model)
    result = pc.prune(model, "magnitude", 0.0, input_shape=SHAPE)
    assert all(m.all() for m in result.masks.values())
    assert result.density == 1.0 and result.collapsed == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


# ---- attached masks survive training ------------------------------------------------------------------
OPTIMIZERS = {
    "sgd_nesterov_wd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=1e-4),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("method", list(pc.METHODS))
def test_pruned_weights_stay_exactly_zero_under_training(method, optimizer):
    model = conv_net()
    result = prune_any(model, method, 0.7, iterations=2)
    masks = result.masks
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = OPTIMIZERS[optimizer](model.parameters())
    model.train()
    for x, y in data(n=16, seed=1) * 2:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0), name
        assert not torch.equal(params[name][mask], start[name][mask]), f"{name}: kept weights did not train"


# ---- layer collapse ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_one_shot_synflow_collapses_a_deep_mlp_and_100_rounds_do_not(seed):
    # 6 hidden layers of 64 (4096 weights each) between a 16x64 input layer and a 64x10 classifier, at
    # compression 10^3 (22 weights kept). SynFlow's scores of a layer sum to R, so one-shot scores are
    # smallest in the largest layers and empty them; iterating re-balances (Tanaka et al. 2020).
    def model():
        torch.manual_seed(seed)
        return pc.MODELS["mlp"]((1, 4, 4), 10, width=64, depth=6, bias=False)

    one_shot = pc.prune(model(), "synflow", 0.999, input_shape=(1, 4, 4), iterations=1)
    iterative = pc.prune(model(), "synflow", 0.999, input_shape=(1, 4, 4), iterations=100)
    assert one_shot.collapsed, "one-shot SynFlow should empty a layer at compression 10^3"
    assert "out.weight" not in one_shot.collapsed  # the smallest layer has the highest scores per weight
    assert iterative.collapsed == []
    assert kept(one_shot.masks) == kept(iterative.masks) == round(0.001 * 22144)
    assert iterative.effective_density > 0


@pytest.fixture(scope="module")
def plain_vgg_results():
    """VGG-16 without BatchNorm, channels / 16, on 3x32x32 inputs, at 99.9% sparsity (58 weights kept)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, 32, 32, generator=gen)
    y = torch.arange(20) % 10   # class-balanced, as GraSP prefers
    results = {}
    for method, iterations in (("magnitude", 1), ("grasp", 1), ("synflow", 100)):
        torch.manual_seed(0)
        model = pc.MODELS["vgg16"]((3, 32, 32), 10, width_divisor=16)
        results[method] = pc.prune(model, method, 0.999, [(x, y)], iterations=iterations, scope="global")
    return results


@pytest.mark.parametrize("method", ["magnitude", "grasp"])
def test_magnitude_and_grasp_collapse_a_plain_vgg_at_99_9_percent_sparsity(plain_vgg_results, method):
    result = plain_vgg_results[method]
    assert result.collapsed, f"{method} should empty a layer of plain VGG-16 at compression 10^3"
    assert result.effective_density == 0  # no path from input to output is left
    assert kept(result.masks) == round(0.001 * int(result.layers["total"].sum()))


def test_synflow_does_not_collapse_a_plain_vgg_at_99_9_percent_sparsity(plain_vgg_results):
    result = plain_vgg_results["synflow"]
    assert result.collapsed == []
    assert (result.layers["kept"] > 0).all() and result.effective_density > 0


# ---- SynFlow's precision ---------------------------------------------------------------------------------
def scaled_deep_net(scale: float, depth: int = 40) -> nn.Module:
    """`depth` bias-free 16x16 ReLU layers, weights multiplied by `scale`. Kaiming weights have
    E|w| = sqrt(2/16) sqrt(2/pi) = 0.28, so each layer multiplies R by about 16 x 0.28 x scale = 4.5 scale."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [nn.Linear(16, 16, bias=False), nn.ReLU()]
    model = pc.engine.models.kaiming_init(nn.Sequential(*layers, nn.Linear(16, 10, bias=False)))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


@pytest.mark.parametrize("scale", [4.0, 0.01])  # R ~ 18^40 = 1e50 and 0.045^40 = 1e-54
def test_synflow_switches_to_float64_when_float32_would_overflow_or_underflow(scale):
    model = scaled_deep_net(scale)
    state32 = pc.engine.methods.absolute_state(model, None, torch.float32)
    _, flow32 = pc.engine.methods.synaptic_flow_scores(model, None, (1, 4, 4), state32)
    _, flow64 = pc.engine.methods.synaptic_flow_scores(model, None, (1, 4, 4))
    # float32 cannot hold R (inf above ~3.4e38, 0 below ~1e-45); float64 can.
    assert not (1e-38 < float(flow32) < 3e38)
    assert 1e-300 < float(flow64) < 1e300

    auto = pc.prune(scaled_deep_net(scale), "synflow", 0.9, input_shape=(1, 4, 4), iterations=5)
    forced = pc.prune(scaled_deep_net(scale), "synflow", 0.9, input_shape=(1, 4, 4), iterations=5,
                      options={"precision": "float64"})
    for name, score in auto.scores.items():
        assert score.dtype == torch.float64
        assert torch.isfinite(score).all()
        assert torch.equal(auto.masks[name], forced.masks[name])
    assert auto.collapsed == []


def test_synflow_stays_in_float32_when_it_is_safe():
    result = pc.prune(mlp(bias=False), "synflow", 0.9, input_shape=SHAPE, iterations=3)
    assert all(s.dtype == torch.float32 for s in result.scores.values())


def test_synflow_scores_on_plain_vgg19_are_finite_and_conserved():
    torch.manual_seed(0)
    model = pc.MODELS["vgg19"]((3, 32, 32), 10, width_divisor=4)
    result = pc.prune(model, "synflow", 0.99, input_shape=(3, 32, 32), iterations=1)
    totals = []
    for name, score in result.scores.items():
        assert torch.isfinite(score).all() and (score >= 0).all(), name
        totals.append(float(score.double().sum()))
    # Biases are zero at init, so every layer's scores sum to the same R (conservation) even in float32.
    assert max(totals) / min(totals) == pytest.approx(1.0, rel=1e-3)


# ---- iterative methods ------------------------------------------------------------------------------------
@pytest.fixture
def recorded_rounds(monkeypatch):
    """The mask chosen in every round of pc.prune (global scope selects through select_top_k)."""
    rounds = []
    original = select_top_k

    def spy(scores, k, candidates=None):
        chosen = original(scores, k, candidates)
        rounds.append({n: m.clone() for n, m in chosen.items()})
        return chosen

    # prune selects through its own name for global scope; select_per_layer through the masks module's.
    monkeypatch.setattr("pruning_core.engine.prune.select_top_k", spy)
    monkeypatch.setattr("pruning_core.engine.masks.select_top_k", spy)
    return rounds


def revived(rounds) -> int:
    """Weights kept at the end that were pruned in some earlier round."""
    final = rounds[-1]
    return sum(int((final[n] & ~earlier[n]).sum()) for earlier in rounds[:-1] for n in final)


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("method", [n for n, s in pc.METHODS.items() if s.score is not None and not s.revives])
def test_masks_only_shrink_round_over_round_unless_the_method_revives(recorded_rounds, method, invert):
    # Pruned weights score 0 for most methods, but GraSP's signed scores, random scores and inverted
    # rankings put some kept weights below them: only the candidates rule keeps them out.
    result = pc.prune(conv_net(), method, 0.9, data(), iterations=4, invert=invert, scope="global")
    if pc.METHODS[method].layer_densities is None:
        assert len(recorded_rounds) == 4
    else:  # per-layer selection: one call per layer and round
        layers = len(result.masks)
        assert len(recorded_rounds) == 4 * layers
        recorded_rounds[:] = [{k: v for r in recorded_rounds[i:i + layers] for k, v in r.items()}
                              for i in range(0, len(recorded_rounds), layers)]
    for earlier, later in zip(recorded_rounds, recorded_rounds[1:]):
        for name in later:
            assert not (later[name] & ~earlier[name]).any(), f"{method}: a pruned weight came back"


def test_iter_snip_never_revives_a_pruned_weight(recorded_rounds):
    result = pc.prune(mlp(), "iter_snip", 0.9, data(n=40), iterations=10)
    assert len(recorded_rounds) == 10
    for earlier, later in zip(recorded_rounds, recorded_rounds[1:]):
        for name in later:
            assert not (later[name] & ~earlier[name]).any(), "a pruned weight came back"
    assert all(torch.equal(recorded_rounds[-1][n], result.masks[n]) for n in result.masks)


def test_force_revives_weights_pruned_in_earlier_rounds(recorded_rounds):
    result = pc.prune(mlp(), "force", 0.9, data(n=40), iterations=10)
    assert len(recorded_rounds) == 10
    assert revived(recorded_rounds) > 0
    assert kept(result.masks) == round(0.1 * 216)


# ---- sanity checks (Frankle et al. 2021) --------------------------------------------------------------------
def test_shuffle_keeps_every_layers_count_and_changes_which_weights():
    plain = pc.prune(conv_net(), "synflow", 0.8, input_shape=SHAPE, iterations=5)
    model = conv_net()
    initial = snapshot(model)
    shuffled = pc.prune(model, "synflow", 0.8, input_shape=SHAPE, iterations=5, shuffle=True)
    for name in plain.masks:
        assert int(shuffled.masks[name].sum()) == int(plain.masks[name].sum()), name
    assert any(not torch.equal(shuffled.masks[n], plain.masks[n]) for n in plain.masks)
    # The model's weights follow the shuffled masks.
    for name, mask in shuffled.masks.items():
        assert torch.equal(model.state_dict()[name], initial[name] * mask)
    assert all(torch.equal(pc.attached_masks(model)[n], shuffled.masks[n]) for n in shuffled.masks)


def test_reinit_keeps_the_masks_and_redraws_the_kept_weights_with_a_similar_spread():
    torch.manual_seed(0)
    plain_model = pc.MODELS["mlp"](SHAPE, CLASSES, width=64, depth=2)
    torch.manual_seed(0)
    model = pc.MODELS["mlp"](SHAPE, CLASSES, width=64, depth=2)
    initial = snapshot(model)
    plain = pc.prune(plain_model, "magnitude", 0.5, input_shape=SHAPE)
    reinit = pc.prune(model, "magnitude", 0.5, input_shape=SHAPE, reinit=True)
    for name, mask in plain.masks.items():
        assert torch.equal(reinit.masks[name], mask)
        weight = model.state_dict()[name]
        assert torch.all(weight[~mask] == 0)
        assert not torch.any(weight[mask] == initial[name][mask])
        if mask.numel() >= 1000:  # enough weights to compare spreads
            assert float(weight[mask].std()) == pytest.approx(float(initial[name].std()), rel=0.15)
    assert torch.equal(model.state_dict()["fc1.bias"], initial["fc1.bias"])


def test_invert_keeps_the_lowest_scoring_weights():
    normal = pc.prune(mlp(), "magnitude", 0.75, input_shape=SHAPE, iterations=1)
    inverted = pc.prune(mlp(), "magnitude", 0.75, input_shape=SHAPE, iterations=1, invert=True)
    assert kept(inverted.masks) == kept(normal.masks)
    scores = torch.cat([normal.scores[n].flatten() for n in normal.masks])
    keep = torch.cat([inverted.masks[n].flatten() for n in normal.masks])
    assert float(scores[keep].max()) <= float(scores[~keep].min())
    assert all(not (inverted.masks[n] & normal.masks[n]).any() for n in normal.masks)
    # The reported scores are the method's own, not negated.
    assert all(torch.equal(inverted.scores[n], normal.scores[n]) for n in normal.scores)


# ---- layer densities of the random baselines ----------------------------------------------------------------
def test_random_keeps_the_same_density_in_every_layer():
    model = conv_net()
    result = pc.prune(model, "random", 0.7, input_shape=SHAPE)
    for name, mask in result.masks.items():
        assert abs(int(mask.sum()) - 0.3 * mask.numel()) < 1, name
    assert kept(result.masks) == round(0.3 * 402)


def test_random_erk_layer_densities_hand_computed():
    # Shapes (8, 16), (8, 8), (3, 8) at density 0.6 (see test_masks): the classifier is dense and the
    # others get 0.495 x 128 = 63.36 and 0.66 x 64 = 42.24 weights; round(129.6) = 130 in total, the
    # leftover weight going to the larger remainder.
    result = pc.prune(mlp(), "random_erk", 0.4, input_shape=SHAPE)
    assert [int(m.sum()) for m in result.masks.values()] == [64, 42, 24]
    # Conv net at density 0.1: sum/prod = 9/18, 12/72, 18/288, 11/24 for 18, 72, 288, 24 weights, so
    # epsilon = 0.1 x 402 / (9 + 12 + 18 + 11) = 0.804 and the ideal counts are 7.236, 9.648, 14.472 and
    # 8.844 (none above its layer's size); round(40.2) = 40 = floors (38) + the two largest remainders.
    result = pc.prune(conv_net(), "random_erk", 0.9, input_shape=SHAPE)
    assert [int(m.sum()) for m in result.masks.values()] == [7, 10, 14, 9]


# ---- bad input -----------------------------------------------------------------------------------------------
class NoWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x.flatten(1)[:, :3] * self.scale


BAD_CALLS = [
    (dict(sparsity=1.0), "sparsity must be a fraction in [0, 1)"),
    (dict(sparsity=-0.1), "sparsity must be a fraction in [0, 1)"),
    (dict(sparsity=float("nan")), "sparsity must be a fraction in [0, 1)"),
    (dict(sparsity=True), "sparsity must be a fraction in [0, 1)"),
    (dict(sparsity="0.9"), "sparsity must be a fraction in [0, 1)"),
    (dict(method="nope"), "unknown method 'nope'; choose one of: " + ", ".join(pc.METHODS)),
    (dict(schedule="cosine"), "unknown schedule 'cosine'; choose one of: exponential, linear"),
    (dict(scope="local"), "unknown scope 'local'; choose one of: global, layerwise"),
    (dict(iterations=0), "iterations must be a whole number >= 1"),
    (dict(iterations=2.5), "iterations must be a whole number >= 1"),
    (dict(method="snip", data=None), "pass data=[(inputs, targets), ...]"),
    (dict(data=None, input_shape=None), "data-free pruning needs the input shape"),
    (dict(data=[(torch.randn(4, 3, 4, 4), torch.zeros(4, dtype=torch.long))]),
     "the model cannot take inputs of shape (3, 4, 4)"),
    (dict(data=[(torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 3]))]), "targets must be class indices in [0, 3)"),
    (dict(data=[(torch.randn(4, *SHAPE), torch.tensor([0, -1, 2, 1]))]), "targets must be class indices in [0, 3)"),
    (dict(data=[(torch.randn(4, *SHAPE), torch.zeros(3, dtype=torch.long))]), "1-D class targets of the same length"),
    (dict(data=[torch.randn(4, *SHAPE)]), "data must yield (inputs, targets) pairs"),
    (dict(data=5), "data must be an iterable of (inputs, targets) batches"),
    (dict(input_shape=(1, 5, 5), data=data()), "input_shape (1, 5, 5) disagrees with the data's shape (1, 4, 4)"),
    (dict(seed=-1), "seed must be a whole number from 0 to 2147483647"),
    (dict(seed=2**63), "seed must be a whole number from 0 to 2147483647"),
    (dict(seed=1.5), "seed must be a whole number from 0 to 2147483647"),
    (dict(method="snip", prune_batches=0), "prune_batches must be a whole number >= 1"),
]


@pytest.mark.parametrize("call, message", BAD_CALLS)
def test_bad_input_raises_a_clear_value_error_and_changes_nothing(call, message):
    kwargs = {"method": "synflow", "sparsity": 0.9, "data": data(), "input_shape": None, **call}
    model = conv_net()
    model.train()
    before = snapshot(model)
    with pytest.raises(ValueError) as info:
        pc.prune(model, kwargs.pop("method"), kwargs.pop("sparsity"), kwargs.pop("data"), **kwargs)
    assert message in str(info.value)
    assert_unchanged(model, before)
    assert model.training


def test_data_driven_method_without_data_suggests_data_free_methods():
    with pytest.raises(ValueError) as info:
        pc.prune(mlp(), "grasp", 0.9, input_shape=SHAPE)
    message = str(info.value)
    assert "scores weights on training data" in message and "or choose a data-free method" in message
    for name, spec in pc.METHODS.items():
        if not spec.needs_data:
            assert name in message


def test_a_model_with_nothing_to_prune_is_rejected():
    model = NoWeights()
    before = snapshot(model)
    with pytest.raises(ValueError, match="no nn.Conv2d or nn.Linear weight to prune"):
        pc.prune(model, "magnitude", 0.5, input_shape=SHAPE)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        pc.prune("mlp", "magnitude", 0.5, input_shape=SHAPE)


def test_accepted_data_forms():
    x, y = data()[0]
    single = pc.prune(mlp(), "snip", 0.5, (x, y), iterations=1)
    listed = pc.prune(mlp(), "snip", 0.5, [(x, y)], iterations=1)
    assert all(torch.equal(single.masks[n], listed.masks[n]) for n in single.masks)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=6)
    from_loader = pc.prune(mlp(), "snip", 0.5, loader, iterations=1)
    assert all(torch.equal(from_loader.masks[n], listed.masks[n]) for n in listed.masks)
    # prune_batches limits how many batches are read.
    limited = pc.prune(mlp(), "snip", 0.5, data() + [(x * 100, y)], iterations=1, prune_batches=2)
    both = pc.prune(mlp(), "snip", 0.5, data(), iterations=1)
    assert all(torch.equal(limited.scores[n], both.scores[n]) for n in both.scores)


# ---- cancelling ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["synflow", "snip"])
def test_cancel_from_the_progress_callback_leaves_the_model_unchanged(method):
    model = conv_net()
    model.train()
    before = snapshot(model)
    seen = []

    def progress(done, total):
        seen.append(done)
        if done == 2:
            raise pc.Cancelled()

    with pytest.raises(pc.Cancelled):
        pc.prune(model, method, 0.9, data(), iterations=5, progress=progress, reinit=True, train_mode=True)
    assert seen == [1, 2]
    assert_unchanged(model, before)
    assert model.training


# ---- CUDA ---------------------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("method", list(pc.METHODS))
def test_masks_live_on_the_models_cuda_device(method):
    model = conv_net(device="cuda")
    result = prune_any(model, method, 0.8, device="cuda", iterations=2)
    params = dict(model.named_parameters())
    for name, mask in result.masks.items():
        assert mask.device == params[name].device and mask.is_cuda
        assert torch.all(params[name][~mask] == 0)
    assert all(m.is_cuda for m in pc.attached_masks(model).values())


@needs_cuda
@pytest.mark.parametrize("method, options", [("magnitude", {}), ("random", {}), ("random_erk", {}),
                                             ("synflow", {"precision": "float64"})])
def test_deterministic_methods_give_the_same_masks_on_cpu_and_cuda(method, options):
    # float64 SynFlow on an MLP: the same arithmetic on both devices up to rounding far below any gap.
    cpu = pc.prune(mlp(bias=False), method, 0.8, input_shape=SHAPE, iterations=3, options=options)
    cuda = pc.prune(mlp(bias=False).cuda(), method, 0.8, input_shape=SHAPE, iterations=3, options=options)
    for name in cpu.masks:
        assert torch.equal(cpu.masks[name], cuda.masks[name].cpu()), name
