"""IMP (lottery tickets with rewinding) and GemMiner: registered methods that train to find their masks."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import pruning_core as pc
from pruning_core.engine.masks import kept_count, prunable_weights, round_densities
from pruning_core.studies.lottery import imp_round_densities, signed_constant


@pytest.fixture(scope="module")
def digits():
    return pc.load_dataset("digits")


def fresh(digits, name="mlp", seed=0, **options):
    torch.manual_seed(seed)
    return pc.MODELS[name](digits.input_shape, digits.num_classes, **options)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def total_weights(model):
    return sum(w.numel() for _, _, w in prunable_weights(model))


# ---- IMP ---------------------------------------------------------------------------------------------
def test_imp_reaches_the_target_through_the_stated_rounds_and_masks_only_shrink(digits):
    model = fresh(digits)
    total = total_weights(model)
    result = pc.prune(model, "imp", 0.9, digits, iterations=3, options={"epochs": 1, "record_masks": True})
    rounds = result.details["round_masks"]
    assert len(rounds) == 3 == result.iterations
    expected = [kept_count(d, total) for d in round_densities(0.1, 3, "exponential")]
    assert [sum(int(m.sum()) for m in r.values()) for r in rounds] == expected
    for before, after in zip(rounds, rounds[1:]):
        for name in after:
            assert not (after[name] & ~before[name]).any(), f"{name} regrew a pruned weight"
    assert all(torch.equal(rounds[-1][n], result.masks[n]) for n in result.masks)
    assert int(result.layers["kept"].sum()) == round(0.1 * total)
    # Cost: the dense training and two retrainings of one epoch each (full batches of the default size).
    steps_per_epoch = len(digits.train_y) // digits.spec.train_defaults["batch_size"]
    assert result.details["cost"]["steps"] == 3 * steps_per_epoch
    assert result.summary()["search_steps"] == 3 * steps_per_epoch
    assert [r["round"] for r in result.details["rounds"]] == [0, 1, 2]
    assert all(0.0 <= r["trained_test_accuracy"] <= 1.0 for r in result.details["rounds"])


def test_imp_prune_fraction_sets_the_rounds():
    assert imp_round_densities(0.1, 5, "exponential", 0.5) == pytest.approx([0.5, 0.25, 0.125, 0.1])
    # open_lth's 20% per level: 0.8^10 = 0.107 > 0.1, so 11 rounds reach 90% sparsity.
    densities = imp_round_densities(0.1, 5, "exponential", 0.2)
    assert len(densities) == 11 and densities[-1] == 0.1 and densities[0] == pytest.approx(0.8)
    assert imp_round_densities(0.64, 5, "exponential", 0.2) == pytest.approx([0.8, 0.64])


def test_imp_with_prune_fraction_reports_its_rounds(digits):
    result = pc.prune(fresh(digits), "imp", 0.75, digits, options={"epochs": 0, "prune_fraction": 0.5})
    assert result.iterations == 2 and result.round_densities == pytest.approx([0.5, 0.25])
    assert result.details["cost"]["steps"] == 0


def test_imp_without_rewinding_leaves_the_original_initialisation(digits):
    model = fresh(digits, "conv", width=4)
    initial = state(model)
    result = pc.prune(model, "imp", 0.8, digits, iterations=2, options={"epochs": 1})
    after = model.state_dict()
    for name, value in initial.items():
        expected = value * result.masks[name] if name in result.masks else value
        assert torch.equal(after[name], expected), name


def test_imp_rewinds_to_the_weights_after_k_steps_of_training(digits):
    """Rewinding to step k leaves exactly the state pc.train reaches after k steps with the same seed."""
    k, seed = 5, 3
    model = fresh(digits, "conv", width=4)
    reference = copy.deepcopy(model)
    result = pc.prune(model, "imp", 0.8, digits, iterations=2, seed=seed, options={"epochs": 1, "rewind_step": k})

    calls = []

    def stop_after_k() -> bool:
        calls.append(1)
        return len(calls) > k

    run = pc.train(reference, None, digits, 1, seed=seed, should_stop=stop_after_k, device="cpu").run()
    assert run.cancelled
    expected = reference.state_dict()
    after = model.state_dict()
    changed = False
    for name, value in expected.items():
        if name.endswith("weight_mask"):
            continue
        want = value * result.masks[name] if name in result.masks else value
        assert torch.equal(after[name], want), name
        changed |= not torch.equal(value, fresh(digits, "conv", width=4).state_dict()[name])
    assert changed, "k training steps must have moved the weights"
    assert result.details["rewind_step"] == k


def test_imp_invert_keeps_the_smallest_trained_weights(digits):
    result = pc.prune(fresh(digits), "imp", 0.5, digits, iterations=1, invert=True, options={"epochs": 1})
    kept = torch.cat([result.scores[n][result.masks[n]] for n in result.masks])
    pruned = torch.cat([result.scores[n][~result.masks[n]] for n in result.masks])
    assert kept.max() <= pruned.min()


def test_imp_needs_a_dataset_and_checks_its_options(digits):
    x, y = next(digits.batches("train", 32))
    with pytest.raises(ValueError, match="imp trains the network: pass a pc Dataset"):
        pc.prune(fresh(digits), "imp", 0.5, [(x, y)])
    with pytest.raises(ValueError, match="unknown option"):
        pc.prune(fresh(digits), "imp", 0.5, digits, options={"epoch": 1})
    with pytest.raises(ValueError, match="rewind_step"):
        pc.prune(fresh(digits), "imp", 0.5, digits, options={"epochs": 1, "rewind_step": 10_000})


def test_imp_cancel_leaves_the_model_unchanged(digits):
    model = fresh(digits)
    initial = state(model)

    def cancel(done, total):
        raise pc.Cancelled("stop")

    with pytest.raises(pc.Cancelled):
        pc.prune(model, "imp", 0.5, digits, options={"epochs": 1}, progress=cancel)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in initial.items())
    assert not pc.attached_masks(model)


# ---- GemMiner --------------------------------------------------------------------------------------------
def test_gemminer_mask_is_exactly_the_target_and_the_initial_weights_are_untouched(digits):
    model = fresh(digits, "conv", width=4)
    initial = state(model)
    total = total_weights(model)
    result = pc.prune(model, "gemminer", 0.9, digits, iterations=4, options={"epochs": 1, "record_masks": True})
    assert sum(int(m.sum()) for m in result.masks.values()) == round(0.1 * total)
    after = model.state_dict()
    for name, value in initial.items():
        expected = value * result.masks[name] if name in result.masks else value
        assert torch.equal(after[name], expected), name     # kept weights bit-identical, BN and biases too
    rounds = result.details["round_masks"]
    assert len(rounds) == 4
    for before, later in zip(rounds, rounds[1:]):
        assert all(not (later[n] & ~before[n]).any() for n in later)
    assert result.details["cost"]["steps"] == len(digits.train_y) // digits.spec.train_defaults["batch_size"]
    magnitude = pc.prune(fresh(digits, "conv", width=4), "magnitude", 0.9, digits)
    agreement = sum(int((magnitude.masks[n] & result.masks[n]).sum()) for n in result.masks) / round(0.1 * total)
    assert agreement < 0.5, "the mined mask should not be magnitude pruning's"


def test_gemminer_learns_a_subnetwork_that_works_before_any_weight_training(digits):
    """The point of mining: the masked random network itself classifies far above chance (the MLP has no
    BatchNorm, so evaluating it at initialisation is meaningful)."""
    mined = fresh(digits)
    pc.prune(mined, "gemminer", 0.9, digits, options={"epochs": 5, "batch_size": 64})
    random = fresh(digits)
    pc.prune(random, "random", 0.9, digits)
    mined_accuracy = pc.evaluate(mined, digits)[1]
    assert mined_accuracy > 0.5
    assert mined_accuracy > pc.evaluate(random, digits)[1] + 0.3


def test_gemminer_signed_constant_init_writes_the_init_it_mined_on(digits):
    model = fresh(digits)
    initial = state(model)
    result = pc.prune(model, "gemminer", 0.8, digits, options={"epochs": 0, "init": "signed_constant"})
    for name, mask in result.masks.items():
        expected = signed_constant(initial[name]) * mask
        assert torch.equal(model.state_dict()[name], expected)
        fan_in = initial[name][0].numel()
        assert torch.allclose(model.state_dict()[name][mask].abs(), torch.full((int(mask.sum()),),
                                                                               math.sqrt(2 / fan_in)))
    with pytest.raises(ValueError, match="init"):
        pc.prune(fresh(digits), "gemminer", 0.8, digits, options={"init": "xavier"})


def test_gemminer_layerwise_scope_keeps_each_layer_at_the_density(digits):
    model = fresh(digits)
    result = pc.prune(model, "gemminer", 0.75, digits, scope="layerwise", iterations=2, options={"epochs": 0})
    assert int(result.layers["kept"].sum()) == round(0.25 * total_weights(model))
    for _, row in result.layers.iterrows():
        assert abs(row["kept"] - 0.25 * row["total"]) <= 1


# ---- registry, runner, cost ---------------------------------------------------------------------------------
def test_methods_are_registered_with_their_papers():
    for name in ("imp", "gemminer"):
        spec = pc.METHODS[name]
        assert spec.run is not None and spec.score is None and spec.needs_data
        assert spec.label and spec.summary and spec.formula and len(spec.explanation) > 200
    assert "Frankle" in pc.METHODS["imp"].paper and "Sreenivasan" in pc.METHODS["gemminer"].paper


def test_runner_trains_imp_with_the_configurations_epochs(tmp_path):
    config = pc.RunConfig(method="imp", sparsity=0.75, model="mlp", dataset="digits", epochs=1, iterations=2)
    with pc.Store(tmp_path / "runs.db") as store:
        outcome = pc.execute(config, store, device="cpu")
        summary = store.get_run(outcome.run_id)["summary"]
    steps_per_epoch = len(pc.load_dataset("digits").train_y) // pc.DATASETS["digits"].train_defaults["batch_size"]
    assert summary["search_steps"] == 2 * steps_per_epoch     # epochs=1 per round, 2 rounds
    assert summary["kept"] == round(0.25 * summary["total"])
    assert 0.0 <= summary["final_test_accuracy"] <= 1.0


def test_method_cost_counts_search_and_training_steps():
    common = dict(model="mlp", dataset="digits", sparsity=0.75, epochs=1)
    steps_per_epoch = len(pc.load_dataset("digits").train_y) // pc.DATASETS["digits"].train_defaults["batch_size"]
    one_shot = pc.method_cost(method="magnitude", **common)
    mined = pc.method_cost(method="gemminer", **common)
    assert one_shot["search_steps"] == 0 and one_shot["train_steps"] == steps_per_epoch
    assert mined["search_steps"] == steps_per_epoch and mined["total_steps"] == 2 * steps_per_epoch
    assert mined["search_s"] > 0 and mined["total_s"] >= mined["search_s"]
    assert 0.0 <= mined["test_accuracy"] <= 1.0
    halving = pc.method_cost(method="imp", model="mlp", dataset="digits", sparsity=0.75, epochs=0,
                             options={"prune_fraction": 0.5})
    assert halving["iterations"] == 2 and halving["search_steps"] == 0 and halving["train_steps"] == 0
