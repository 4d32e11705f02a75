"""pc.train: masks stay zero, reproducibility, accuracy on digits, collapse, cancel, bad input."""

from __future__ import annotations

import pytest
import torch

import pruning_core as pc
from pruning_core.engine.settings import TrainSettings
from pruning_core.engine.training import collapse_warnings


@pytest.fixture(scope="module")
def digits():
    return pc.load_dataset("digits")


def fresh_conv(digits, seed=0, **kw):
    torch.manual_seed(seed)
    return pc.MODELS["conv"](digits.input_shape, digits.num_classes, **kw)


def trained_accuracy(digits, method=None, sparsity=0.0, epochs=15, seed=0):
    model = fresh_conv(digits, seed)
    if method is not None:
        pc.prune(model, method, sparsity, digits, seed=seed)
    return pc.train(model, None, digits, epochs, seed=seed, device="cpu").run()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_and_kept_weights_learn(digits, optimizer):
    model = fresh_conv(digits, width=8)
    result = pc.prune(model, "magnitude", 0.8, input_shape=digits.input_shape)
    before = {n: w.detach().clone() for n, _, w in pc.prunable_weights(model)}
    # Weight decay and momentum would move a zero weight off zero if its gradient were not masked.
    pc.train(model, None, digits, 2, optimizer=optimizer, weight_decay=0.05, lr=0.05, device="cpu").run()
    for name, _, weight in pc.prunable_weights(model):
        mask = result.masks[name]
        assert torch.count_nonzero(weight[~mask]) == 0, name
        assert not torch.equal(weight[mask], before[name][mask]), f"{name}: kept weights did not train"


def test_masks_given_to_train_are_attached(digits):
    model = fresh_conv(digits, width=8)
    masks = {n: torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) < 0.3
             for n, _, w in pc.prunable_weights(model)}
    pc.train(model, masks, digits, 1, device="cpu").run()
    for name, _, weight in pc.prunable_weights(model):
        assert torch.count_nonzero(weight[~masks[name]]) == 0


def test_same_seed_same_run(digits):
    runs = []
    for _ in range(2):
        model = fresh_conv(digits, seed=3, width=8)
        pc.prune(model, "snip", 0.9, digits, seed=3)
        result = pc.train(model, None, digits, 2, seed=3, device="cpu").run()
        runs.append((result.history[["train_loss", "test_loss", "test_accuracy"]], model.state_dict()))
    assert runs[0][0].equals(runs[1][0])
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key]), key


def test_different_seed_different_run(digits):
    histories = [pc.train(fresh_conv(digits, seed, width=8), None, digits, 1, seed=seed, device="cpu").run().history
                 for seed in (0, 1)]
    assert histories[0]["train_loss"].dropna().tolist() != histories[1]["train_loss"].dropna().tolist()


def test_dense_reaches_95_percent_and_sparse_synflow_snip_stay_close(digits):
    dense = trained_accuracy(digits, epochs=15)
    assert dense.final_test_accuracy >= 0.95
    for method in ("synflow", "snip"):
        sparse = trained_accuracy(digits, method, 0.9, epochs=15)
        assert sparse.final_test_accuracy >= dense.final_test_accuracy - 0.03, method


def test_collapsed_network_stays_at_chance_and_says_why(digits):
    model = fresh_conv(digits)
    result = pc.prune(model, "magnitude", 0.999, input_shape=digits.input_shape)
    assert result.collapsed, "magnitude at 99.9% should empty the wide middle layers of the conv net"
    trained = pc.train(model, None, digits, 5, device="cpu").run()
    most_common = torch.bincount(digits.test_y).max().item() / len(digits.test_y)
    assert trained.final_test_accuracy <= most_common + 0.02
    assert any("collapse" in w.lower() and result.collapsed[0] in w for w in trained.warnings)


def test_events_track_epochs_and_end_with_done(digits):
    model = fresh_conv(digits, width=8)
    run = pc.train(model, None, digits, 3, device="cpu", steps_per_event=5)
    events = list(run)
    evals = [e for e in events if e.kind == "eval"]
    assert [e.epoch for e in evals] == [0.0, 1.0, 2.0, 3.0]
    assert evals[0].train_loss is None and evals[1].train_loss is not None
    assert any(e.kind == "step" for e in events)
    assert events[-1].kind == "done" and events[-1].test_accuracy == run.result.final_test_accuracy
    steps = [e.step for e in events]
    assert steps == sorted(steps)
    assert all(0.0 <= e.test_accuracy <= 1.0 for e in evals)
    assert run.result.images_per_s > 0


def test_should_stop_cancels(digits):
    model = fresh_conv(digits, width=8)
    calls = {"n": 0}

    def stop_after_three():
        calls["n"] += 1
        return calls["n"] > 3

    run = pc.train(model, None, digits, 5, device="cpu", should_stop=stop_after_three)
    events = list(run)
    assert events[-1].kind == "cancelled"
    assert run.result.cancelled
    assert events[-1].step == 3


def test_zero_epochs_only_evaluates(digits):
    model = fresh_conv(digits, width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = pc.train(model, None, digits, 0, device="cpu").run()
    assert result.history["kind"].tolist() == ["eval", "done"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_settings_fall_back_to_dataset_defaults(digits):
    settings = TrainSettings.resolve(digits, lr=0.2, epochs=None)
    assert settings.lr == 0.2
    assert settings.epochs == digits.spec.train_defaults["epochs"]
    assert settings.batch_size == digits.spec.train_defaults["batch_size"]


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": -1}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"lr": -0.1}, "lr"),
    ({"lr_schedule": "step"}, "lr_schedule"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"weight_decay": float("inf")}, "weight_decay must be a finite number >= 0"),
    ({"seed": 2**31}, "seed must be a whole number from 0 to 2147483647"),
    ({"seed": -1}, "seed must be a whole number from 0 to 2147483647"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"device": "cuda:99"}, "cuda:99"),
])
def test_bad_settings_are_clear_errors(digits, kwargs, message):
    model = fresh_conv(digits, width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        pc.train(model, None, digits, **{"epochs": 1, **kwargs})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_unknown_dataset_lists_names(digits):
    with pytest.raises(ValueError, match="digits"):
        pc.train(fresh_conv(digits), None, "imagenet-21k", 1)


def test_model_that_does_not_fit_the_data(digits):
    torch.manual_seed(0)
    wrong_channels = pc.MODELS["conv"]((3, 8, 8), 10)
    with pytest.raises(ValueError, match="cannot take inputs"):
        pc.train(wrong_channels, None, digits, 1)
    too_few_outputs = pc.MODELS["conv"]((1, 8, 8), 5)
    with pytest.raises(ValueError, match="5 outputs"):
        pc.train(too_few_outputs, None, digits, 1)


def test_not_a_model():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        pc.train("conv", None, "digits", 1)


def test_collapse_warnings_name_empty_layers():
    masks = {"a.weight": torch.tensor([True, False]), "b.weight": torch.zeros(3, dtype=torch.bool)}
    (warning,) = collapse_warnings(masks, 10)
    assert "b.weight" in warning and "a.weight" not in warning and "10%" in warning
    assert collapse_warnings({"a.weight": torch.tensor([True])}) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_keeps_masks_and_learns(digits):
    model = fresh_conv(digits)
    result = pc.prune(model.cuda(), "synflow", 0.9, input_shape=digits.input_shape)
    trained = pc.train(model, None, digits, 10, device="cuda").run()
    assert trained.final_test_accuracy >= 0.9
    for name, _, weight in pc.prunable_weights(model):
        assert weight.is_cuda
        assert torch.count_nonzero(weight[~result.masks[name]]) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_gpu_on_a_machine_without_one_says_to_use_the_cpu(digits):
    with pytest.raises(ValueError, match="this machine has no CUDA GPU; use 'cpu'"):
        pc.train(fresh_conv(digits, width=8), None, digits, epochs=1, device="cuda")
