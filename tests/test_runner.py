"""runner.execute: one configuration end to end, recorded in the store; reuse; failures; reloading a run."""

from __future__ import annotations

import pytest
import torch

import pruning_core as pc
from pruning_core.infra.runner import build_model, execute
from pruning_core.infra.store import Store

FAST = dict(dataset="digits", model="mlp", epochs=1)


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "runs.db") as s:
        yield s


def test_train_run_is_recorded(store):
    config = pc.RunConfig(method="snip", sparsity=0.9, **FAST)
    outcome = execute(config, store, device="cpu")
    record = store.get_run(outcome.run_id)
    assert record["status"] == "done"
    assert record["key"] == config.key()
    assert record["config"] == config.to_dict()
    assert record["summary"]["final_test_accuracy"] == pytest.approx(outcome.train_result.final_test_accuracy)
    layers = store.layers(outcome.run_id)
    assert layers["kept"].sum() == round(0.1 * layers["total"].sum())
    metrics = store.metrics(outcome.run_id)
    evals = metrics[metrics["kind"] == "eval"]
    assert evals["epoch"].tolist() == [0.0, 1.0]
    assert evals["test_accuracy"].iloc[-1] == pytest.approx(record["summary"]["final_test_accuracy"])
    masks = store.load_masks(outcome.run_id)
    assert all(torch.equal(masks[n], outcome.prune_result.masks[n].cpu()) for n in masks)
    assert "prune_s" in record["timings"] and "train_s" in record["timings"]


def test_same_configuration_is_reused_not_recomputed(store, monkeypatch):
    config = pc.RunConfig(method="magnitude", sparsity=0.5, **FAST)
    first = execute(config, store, device="cpu")

    def no_pruning(*args, **kwargs):
        raise AssertionError("a finished configuration was computed again")

    monkeypatch.setattr("pruning_core.infra.runner.prune", no_pruning)
    second = execute(config, store, device="cpu")
    assert second.reused and second.run_id == first.run_id
    assert second.summary["final_test_accuracy"] == first.summary["final_test_accuracy"]
    assert len(store.list_runs()) == 1


def test_dense_configurations_share_one_key():
    a = pc.RunConfig(method="snip", sparsity=0.0, schedule="linear", **FAST)
    b = pc.RunConfig(method="synflow", sparsity=0.0, **FAST)
    assert a.key() == b.key()
    assert a.canonical().method == pc.DENSE
    with pytest.raises(ValueError, match="sparsity must be 0"):
        pc.RunConfig(method=pc.DENSE, sparsity=0.5).validate()


def test_prune_only_run(store):
    config = pc.RunConfig(method="synflow", sparsity=0.99, iterations=10, **FAST)
    outcome = execute(config, store, kind="prune", device="cpu")
    record = store.get_run(outcome.run_id)
    assert record["kind"] == "prune" and record["status"] == "done"
    assert "final_test_accuracy" not in record["summary"]
    assert store.metrics(outcome.run_id).empty


def test_failure_is_recorded_with_a_plain_message(store, tmp_path):
    config = pc.RunConfig(dataset="mnist", model="mlp", method="magnitude", sparsity=0.5, epochs=1)
    with pytest.raises(pc.DatasetUnavailableError):
        execute(config, store, data_root=str(tmp_path / "empty"), download=False, device="cpu")
    (failed,) = store.list_runs().to_dict(orient="records")
    assert failed["status"] == "failed"
    assert "digits" in failed["error"] and "MNIST" in failed["error"]


def test_should_stop_cancels_the_run(store):
    config = pc.RunConfig(method="magnitude", sparsity=0.5, **{**FAST, "epochs": 3})
    seen = []

    def stop_once_training():
        return any(m.startswith("training") for m in seen)

    with pytest.raises(pc.Cancelled):
        execute(config, store, device="cpu", should_stop=stop_once_training,
                on_progress=lambda message, done, total: seen.append(message))
    (run,) = store.list_runs().to_dict(orient="records")
    assert run["status"] == "cancelled"


def test_cancel_in_store_stops_a_running_run(store):
    config = pc.RunConfig(method="magnitude", sparsity=0.5, **{**FAST, "epochs": 3})
    run_id = store.create_run(config.to_dict(), key=config.key())

    def cancel_from_outside(message, done, total):
        if message.startswith("training"):
            store.cancel_run(run_id)  # as the dashboard's cancel button does

    with pytest.raises(pc.Cancelled):
        execute(config, store, run_id=run_id, device="cpu", on_progress=cancel_from_outside)
    assert store.get_run(run_id)["status"] == "cancelled"


def test_same_seed_gives_same_initial_weights_for_every_method():
    dataset = pc.load_dataset("digits")
    weights = [build_model(pc.RunConfig(method=m, model="conv", seed=4), dataset).state_dict()
               for m in ("synflow", "snip", "magnitude")]
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
    different_seed = build_model(pc.RunConfig(model="conv", seed=5), dataset).state_dict()
    assert not torch.equal(weights[0]["conv1.weight"], different_seed["conv1.weight"])


def test_bad_config_changes_nothing(store):
    with pytest.raises(ValueError, match="sparsity"):
        execute(pc.RunConfig(sparsity=1.0, **FAST), store)
    with pytest.raises(ValueError, match="choose one of"):
        execute(pc.RunConfig(method="nope", **FAST), store)
    assert store.list_runs().empty


# ---- a failed start (issue 10, item 3) -------------------------------------------------------------------------
MISSING_GPU = "cuda:99"   # no machine has a hundred GPUs: refused with or without CUDA


def test_a_device_that_does_not_exist_is_bad_input_and_records_nothing(store):
    with pytest.raises(ValueError, match="cuda:99"):
        execute(pc.RunConfig(method="magnitude", sparsity=0.5, **FAST), store, device=MISSING_GPU)
    assert store.list_runs().empty


def test_a_queued_run_that_cannot_start_fails_with_the_reason(store):
    # The job manager creates the run first; a device it hands over that this machine lacks fails that run
    # with the device's message, instead of leaving it queued for the next process to call it killed.
    config = pc.RunConfig(method="magnitude", sparsity=0.5, **FAST)
    run_id = store.create_run(config.to_dict(), key=config.key())
    with pytest.raises(ValueError, match="cuda:99"):
        execute(config, store, run_id=run_id, device=MISSING_GPU)
    record = store.get_run(run_id)
    assert record["status"] == "failed" and "cuda:99" in record["error"]


def test_a_failure_while_starting_is_recorded(store, monkeypatch):
    def disk_full(run_id, device):
        raise OSError("database or disk is full")

    monkeypatch.setattr(store, "start_run", disk_full)
    with pytest.raises(OSError):
        execute(pc.RunConfig(method="magnitude", sparsity=0.5, **FAST), store, device="cpu")
    (run,) = store.list_runs().to_dict(orient="records")
    assert run["status"] == "failed" and "disk is full" in store.get_run(run["run_id"])["error"]


def test_a_run_cancelled_before_it_started_ends_cancelled(store):
    config = pc.RunConfig(method="magnitude", sparsity=0.5, **FAST)
    run_id = store.create_run(config.to_dict(), key=config.key())
    store.cancel_run(run_id)   # a viewer cancelled it while it waited in the queue
    with pytest.raises(pc.Cancelled):
        execute(config, store, run_id=run_id, device="cpu")
    assert store.get_run(run_id)["status"] == "cancelled"


@pytest.mark.parametrize("kind", ["train", "prune"])
def test_a_collapsed_run_stores_its_collapse_warning_once(store, kind):
    config = pc.RunConfig(method="magnitude", sparsity=0.9999, dataset="digits", model="conv", epochs=1)
    outcome = execute(config, store, kind=kind, device="cpu")
    (warning,) = store.get_run(outcome.run_id)["summary"]["warnings"]
    assert warning.startswith("Layer collapse: conv2.weight") and warning.endswith("(10% for 10 classes).")


# ---- one key, one value (issue 10, item 15) --------------------------------------------------------------------
def test_the_cli_and_the_job_worker_train_a_key_to_the_same_numbers(tmp_path, monkeypatch):
    # Float sums depend on how many threads share them: with one thread and with two, this configuration ends
    # 0.3 points apart. Both entry points train under the core's thread policy, whatever the caller set.
    import json
    import os
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from pruning_core.engine.threads import THREADS_ENV, cpu_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    flags = dict(dataset="digits", model="conv", method="magnitude", sparsity=0.5, epochs=2, seed=0)
    cli = subprocess.run([sys.executable, "-m", "pruning_core", "train", "--json", "--quiet", "--no-store",
                          *[part for name, value in flags.items() for part in (f"--{name}", str(value))]],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)

    config = pc.RunConfig(**flags).canonical().validate()
    store = Store(tmp_path / "worker.db")
    run_id = store.create_run(config.to_dict(), key=config.key())
    # Neither the policy's count nor torch's default in a fresh process (the CLI's count before the policy).
    other = max(cpu_threads(), os.cpu_count() or 1) + 1
    seen = {}

    def worker():   # as the job manager's worker thread calls it
        seen["before"] = torch.get_num_threads()
        execute(config, store, kind="train", run_id=run_id, reuse=False, validated=True)
        seen["after"] = torch.get_num_threads()

    previous = torch.get_num_threads()
    torch.set_num_threads(other)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(300)
    finally:
        torch.set_num_threads(previous)
    assert seen == {"before": other, "after": other}      # the caller's count, restored after the run
    from_worker = store.get_run(run_id)["summary"]
    assert from_worker["threads"] == from_cli["threads"] == cpu_threads()
    assert from_worker["device"] == from_cli["device"] == "CPU"
    assert from_worker["final_test_accuracy"] == from_cli["final_test_accuracy"]
    assert from_worker["final_test_loss"] == from_cli["final_test_loss"]


def test_thread_policy_follows_the_environment(monkeypatch):
    from pruning_core.engine.threads import THREADS_ENV, cpu_threads, run_threads

    monkeypatch.setenv(THREADS_ENV, "3")
    assert cpu_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "zero")      # not a positive whole number: half the cores
    import os

    assert cpu_threads() == max(1, (os.cpu_count() or 2) // 2)
    monkeypatch.setenv(THREADS_ENV, "2")
    before = torch.get_num_threads()
    with run_threads("cpu") as used:
        assert used == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
