"""Dynamic sparse training (SET, RigL): exact layer counts, zeros between updates, RigL's regrowth, the cosine
schedule of the drop fraction, fresh optimizer state for regrown weights, and static training unchanged."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pruning_core as pc
from pruning_core.engine.masks import MASK_BUFFER
from pruning_core.engine.sparse_training import (MASK_UPDATE_COLUMNS, MaskUpdater, SparseTrainingSettings,
                                                 drop_and_grow, drop_fraction_at)


@pytest.fixture(scope="module")
def digits():
    return pc.load_dataset("digits")


def pruned(digits, model="conv", method="random_erk", sparsity=0.9, seed=0, **kw):
    net = pc.MODELS[model](digits.input_shape, digits.num_classes, seed=seed, **kw)
    result = pc.prune(net, method, sparsity, digits, seed=seed)
    return net, result.masks


def counts(masks):
    return {name: int(mask.sum()) for name, mask in masks.items()}


@pytest.mark.parametrize("mode", ["set", "rigl"])
@pytest.mark.parametrize("model,kw", [("conv", {"width": 8}), ("mlp", {"width": 32, "depth": 2})])
def test_every_update_keeps_each_layers_count_and_pruned_weights_stay_zero_between_updates(digits, mode, model,
                                                                                            kw):
    net, masks = pruned(digits, model, **kw)
    initial = {n: m.clone() for n, m in masks.items()}
    expected = counts(masks)
    updates, checked_steps = [], [0]

    def check_state() -> None:
        attached = pc.attached_masks(net)
        assert counts(attached) == expected
        for name, _, weight in pc.prunable_weights(net):
            assert torch.count_nonzero(weight.detach()[~attached[name]]) == 0, name

    def on_update(record) -> None:
        check_state()
        assert {layer["layer"]: layer["kept"] for layer in record["layers"]} == expected
        updates.append(record)

    def between_steps() -> bool:   # pc.train asks before every step: the state the step starts from
        check_state()
        checked_steps[0] += 1
        return False

    run = pc.train(net, None, digits, 4, seed=0, device="cpu", sparse_training=mode, update_every=5,
                   on_mask_update=on_update, should_stop=between_steps, weight_decay=0.05)
    result = run.run()
    check_state()
    steps_per_epoch = len(digits.train_y) // result.settings.batch_size
    total = 4 * steps_per_epoch
    assert [r["step"] for r in updates] == list(range(5, int(0.75 * total), 5))
    assert checked_steps[0] == total
    moved = sum(layer["moved"] for r in updates for layer in r["layers"])
    assert moved > 0, "the masks never changed: the test would prove nothing"
    final = pc.attached_masks(net)
    assert any(not torch.equal(final[n], initial[n]) for n in final)
    # The caller's masks are not rewritten under it.
    assert all(torch.equal(masks[n], initial[n]) for n in masks)
    assert list(result.mask_updates.columns) == MASK_UPDATE_COLUMNS
    assert result.summary()["weights_moved"] == moved


def hand_built_layer():
    """A 4-input, 3-class linear layer keeping 4 weights: the two smallest kept ones are (0, 2) and (1, 3)."""
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.9, 0.0, 0.01, 0.0],
                                            [0.0, 0.0, 0.7, -0.02],
                                            [0.0, 0.0, 0.0, 0.0]]))
    mask = model[0].weight != 0
    pc.attach_masks(model, {"0.weight": mask})
    inputs = torch.tensor([[0.1, 3.0, -0.2, 2.0], [1.0, -1.0, 0.5, 0.3]])
    targets = torch.tensor([2, 0])
    return model, mask, inputs, targets


def test_rigl_regrows_where_the_dense_gradient_is_largest():
    model, mask, inputs, targets = hand_built_layer()
    weight = model[0].weight
    # Cross-entropy's gradient of a linear layer: (softmax(Wx) - onehot(y))ᵀ x / N, for every weight.
    with torch.no_grad():
        delta = torch.softmax(inputs @ weight.T, dim=1) - F.one_hot(targets, 3).float()
        gradient = (delta.T @ inputs / len(inputs)).abs()
    kept_after_drop = mask.clone()
    kept_after_drop[0, 2] = kept_after_drop[1, 3] = False          # the two smallest |w| of the four
    outside = gradient.masked_fill(kept_after_drop, -1.0).flatten()
    expected_grown = torch.zeros(12, dtype=torch.bool)
    expected_grown[outside.topk(2).indices] = True
    expected_grown = expected_grown.view(3, 4)
    assert not torch.equal(expected_grown, mask & ~kept_after_drop), "the case must move weights"

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    settings = SparseTrainingSettings.resolve("rigl", update_every=1, drop_fraction=0.6, update_until=1.0)
    updater = MaskUpdater(model, opt, settings, total_steps=1000)
    before = weight.detach().clone()
    record = updater.update(1, inputs, targets)                   # α_1 ≈ 0.6: floor(0.6 × 4) = 2 move
    new_mask = getattr(model[0], MASK_BUFFER)
    assert torch.equal(new_mask, kept_after_drop | expected_grown)
    assert record["layers"][0]["dropped"] == 2 and record["layers"][0]["kept"] == 4
    assert torch.equal(weight.detach()[kept_after_drop], before[kept_after_drop])   # survivors untouched
    assert not weight.detach()[~kept_after_drop].any()            # dropped gone, regrown start at zero


def test_drop_and_grow_keeps_the_count_and_picks_the_highest_scores_outside_the_kept_weights():
    weight = torch.tensor([[0.5, -0.1, 0.0, 0.3, 0.0, 0.2]])
    mask = weight != 0
    score = torch.tensor([[9.0, 8.0, 1.0, 7.0, 3.0, 2.0]])
    kept, grown = drop_and_grow(weight, mask, 2, score)
    assert kept.tolist() == [[True, False, False, True, False, False]]   # -0.1 and 0.2 are the smallest
    # Among the rest (-0.1 just dropped included, as in RigL), the two highest scores: 8.0 and 3.0.
    assert grown.tolist() == [[False, True, False, False, True, False]]
    assert int((kept | grown).sum()) == int(mask.sum())
    with pytest.raises(ValueError, match="count must be between 0 and the 4 kept weights"):
        drop_and_grow(weight, mask, 5, score)


def test_drop_fraction_follows_the_cosine_decay():
    alpha, end = 0.3, 120
    for t in range(0, 200, 7):
        expected = alpha / 2 * (1 + math.cos(math.pi * t / end)) if t < end else 0.0
        assert drop_fraction_at(t, alpha, end) == pytest.approx(expected, abs=1e-15)
    assert drop_fraction_at(0, alpha, end) == pytest.approx(alpha)
    assert drop_fraction_at(60, alpha, end) == pytest.approx(alpha / 2)
    assert drop_fraction_at(120, alpha, end) == 0.0


def test_each_update_drops_the_scheduled_fraction_of_every_layer(digits):
    net, masks = pruned(digits, "conv", width=8)
    result = pc.train(net, None, digits, 4, seed=0, device="cpu", sparse_training="set", update_every=4,
                      drop_fraction=0.5, update_until=0.8).run()
    table = result.mask_updates
    total = 4 * (len(digits.train_y) // result.settings.batch_size)
    end = int(0.8 * total)
    assert sorted(table["step"].unique()) == list(range(4, end, 4))
    for row in table.itertuples():
        alpha_t = 0.5 / 2 * (1 + math.cos(math.pi * row.step / end))
        assert row.drop_fraction == pytest.approx(alpha_t)
        assert row.dropped == (math.floor(alpha_t * row.kept) if row.kept < row.total else 0)
        assert row.moved <= row.dropped


def prime_state(opt, weight, value=1.0):
    """Give every per-weight state tensor of the optimizer a history (as after many steps)."""
    for tensor in opt.state[weight].values():
        if torch.is_tensor(tensor) and tensor.shape == weight.shape:
            tensor.fill_(value)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_regrown_and_dropped_weights_start_with_no_optimizer_history(optimizer):
    model, mask, inputs, targets = hand_built_layer()
    weight = model[0].weight
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    F.cross_entropy(model(inputs), targets).backward()
    opt.step()
    pc.enforce_masks(model)
    prime_state(opt, weight)
    old_mask = getattr(model[0], MASK_BUFFER).clone()
    settings = SparseTrainingSettings.resolve("rigl", update_every=1, drop_fraction=0.6, update_until=1.0)
    MaskUpdater(model, opt, settings, total_steps=1000).update(1, inputs, targets)
    new_mask = getattr(model[0], MASK_BUFFER)
    moved = old_mask ^ new_mask
    assert moved.any()
    state = [t for t in opt.state[weight].values() if torch.is_tensor(t) and t.shape == weight.shape]
    assert state, "the optimizer keeps per-weight state"
    for tensor in state:
        assert not tensor[moved].any(), "stale state at a moved weight"
        assert torch.all(tensor[old_mask & new_mask] == 1.0), "the survivors keep their history"
    if optimizer == "sgd":
        # The next step of a regrown weight is a fresh weight's: Nesterov with an empty buffer moves it by
        # -lr·(1 + momentum)·g; a stale buffer of ones would add -lr·momentum²·1.
        opt.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        grown = new_mask & ~old_mask
        expected = -0.1 * 1.9 * weight.grad[grown]
        opt.step()
        assert torch.allclose(weight.detach()[grown], expected, atol=1e-7)


def test_static_training_is_the_training_it_always_was(digits):
    def run(**kw):
        net, _ = pruned(digits, "conv", width=8)
        result = pc.train(net, None, digits, 2, seed=0, device="cpu", **kw).run()
        return result, net.state_dict()

    plain, plain_state = run()
    static, static_state = run(sparse_training="static", update_every=1)
    # SET whose first update would come after the end of its update window: the dynamic code path without an
    # update must train exactly like static training (no extra random draws, same data order).
    idle, idle_state = run(sparse_training="set", update_every=10_000)
    for result, state in ((static, static_state), (idle, idle_state)):
        assert result.final_test_accuracy == plain.final_test_accuracy
        assert result.history[["train_loss", "test_loss"]].equals(plain.history[["train_loss", "test_loss"]])
        for key, value in plain_state.items():
            assert torch.equal(value, state[key]), key
    assert "mask_updates" not in plain.summary() and static.summary().keys() == plain.summary().keys()
    assert plain.mask_updates is None and idle.mask_updates.empty


def test_dynamic_training_needs_a_pruned_model_and_valid_knobs(digits):
    dense = pc.MODELS["conv"](digits.input_shape, digits.num_classes, seed=0, width=8)
    with pytest.raises(ValueError, match="needs a pruned model: prune it first"):
        pc.train(dense, None, digits, 1, device="cpu", sparse_training="rigl")
    net, _ = pruned(digits, "conv", width=8)
    with pytest.raises(ValueError, match=r"drop_fraction must be in \(0, 1\]"):
        pc.train(net, None, digits, 1, device="cpu", sparse_training="set", drop_fraction=0.0)
    with pytest.raises(ValueError, match="update_every must be a whole number of steps >= 1"):
        pc.train(net, None, digits, 1, device="cpu", sparse_training="set", update_every=0)
    with pytest.raises(ValueError, match="unknown sparse_training 'dsr'; choose one of: static, set, rigl"):
        pc.train(net, None, digits, 1, device="cpu", sparse_training="dsr")
    with pytest.raises(ValueError, match="on_mask_update must be a function"):
        pc.train(net, None, digits, 1, device="cpu", sparse_training="set", on_mask_update=3)


# ---- the run store: mask updates as metric rows, the final mask as the run's mask -------------------------
def test_a_dynamic_run_records_its_mask_updates_and_keeps_its_final_mask(tmp_path):
    from pruning_core.infra.runner import MASK_PHASE, execute
    from pruning_core.presentation.findings import mask_updates, split_metrics

    config = pc.RunConfig(dataset="digits", model="mlp", method="random_erk", sparsity=0.9, epochs=2,
                          sparse_training="rigl", update_every=3)
    with pc.Store(tmp_path / "runs.db") as store:
        outcome = execute(config, store, device="cpu", keep_model=True)
        metrics = store.metrics(outcome.run_id)
        updates = mask_updates(metrics)
        initial = counts(outcome.prune_result.masks)
        steps = outcome.train_result.mask_updates["step"].unique().tolist()
        assert sorted(updates["step"].unique()) == steps and len(steps) >= 2
        assert (metrics["phase"] == MASK_PHASE).sum() == len(steps) * len(initial)
        for step, rows in updates.groupby("step"):
            assert dict(zip(rows["layer"], rows["kept"])) == initial, step
        assert updates["moved"].sum() == outcome.summary["weights_moved"] > 0
        # The stored mask is the one training ended with, not the pruned one it started from.
        final = pc.attached_masks(outcome.model)
        stored = store.load_masks(outcome.run_id)
        assert all(torch.equal(stored[n], final[n].cpu()) for n in final)
        assert any(not torch.equal(stored[n], outcome.prune_result.masks[n].cpu()) for n in final)
        assert dict(zip(store.layers(outcome.run_id)["name"], store.layers(outcome.run_id)["kept"])) == initial
        # The training curves do not see the mask rows.
        training = split_metrics(metrics)[0]
        assert len(training) == len(outcome.train_result.history.query("kind in ('eval', 'step')"))
        # A static run records no mask rows.
        static = execute(config.replace(sparse_training="static"), store, device="cpu")
        assert mask_updates(store.metrics(static.run_id)).empty


def test_a_run_too_short_for_any_update_says_so(digits):
    net, _ = pruned(digits, "conv", width=8)
    result = pc.train(net, None, digits, 1, device="cpu", sparse_training="rigl").run()   # 11 steps, ΔT = 100
    assert result.mask_updates.empty
    assert any("RigL never updates the mask" in w and "update_every lower" in w for w in result.warnings)


def test_set_and_rigl_in_the_gradient_flow_study_start_from_the_sparse_network(digits):
    from pruning_core.studies.gradient_flow import study_update_every

    table = pc.gradient_flow("mlp", digits, 0.9, "random_erk", ("sparse", "set", "rigl"), epochs=2, holdout=128,
                             batch_size=64)
    first = table[table["step"] == 0].set_index("variant")
    # Same initial network, same mask: the same gradient at initialisation...
    assert first.loc["set", "grad_norm"] == first.loc["sparse", "grad_norm"] == first.loc["rigl", "grad_norm"]
    assert (table.groupby("variant")["density"].nunique() == 1).all()
    # ...and then the masks move, so the measurements part.
    last = table.groupby("variant")["grad_norm"].last()
    assert last["set"] != last["sparse"] and last["rigl"] != last["sparse"]
    # Left to the study, ΔT gives a short run at least ten updates before T_end = 75% of training.
    assert study_update_every(36) == 2 and study_update_every(10_000) == 100
    assert len(range(study_update_every(36), int(0.75 * 36), study_update_every(36))) >= 10
    with pytest.raises(ValueError, match="unknown dst_options delta_t"):
        pc.gradient_flow("mlp", digits, 0.9, variants=("set",), epochs=0, dst_options={"delta_t": 3})


def test_a_sweep_trains_its_pruned_cells_dynamically_and_its_dense_baseline_as_always():
    from pruning_core.studies.sweep import sweep_cells

    cells = sweep_cells("conv", "digits", ["random_erk", "snip"], [0.9], [0], 2, sparse_training="rigl",
                        update_every=3)
    static = sweep_cells("conv", "digits", ["random_erk", "snip"], [0.9], [0], 2)
    assert [c.sparse_training for c in cells] == ["static", "rigl", "rigl"]
    assert cells[0].key() == static[0].key()                              # one dense baseline for both sweeps
    assert all(a.key() != b.key() for a, b in zip(cells[1:], static[1:]))
    assert all(c.update_every == 3 for c in cells[1:]) and cells[0].update_every is None
