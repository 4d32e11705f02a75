"""A server's limits: defaults by device on a classroom server only, the environment and the teacher's changes
on top, and refusals that name the limit, its value and who can raise it."""

from __future__ import annotations

import pytest

from pruning_core.config import RunConfig
from pruning_core.infra.limits import (LIMITS, LimitExceeded, Limits, check_queue, check_run, check_runs,
                                       server_limits)


def test_a_single_user_has_no_limits_and_a_classroom_has_the_devices_defaults():
    assert server_limits(gpu=False, classroom=False, environ={}) == Limits()
    cpu = server_limits(gpu=False, classroom=True, environ={})
    gpu = server_limits(gpu=True, classroom=True, environ={})
    assert cpu.max_epochs == LIMITS["max_epochs"].cpu and gpu.max_epochs == LIMITS["max_epochs"].gpu
    assert cpu.max_cpu_model_weights == 1_000_000 and gpu.max_cpu_model_weights is None


def test_the_environment_and_the_teachers_changes_override_the_defaults():
    environ = {"PRUNING_MAX_EPOCHS": "5", "PRUNING_MAX_SEEDS": "none"}
    limits = server_limits(gpu=False, classroom=True, environ=environ, changes={"max_rounds": 7})
    assert (limits.max_epochs, limits.max_seeds, limits.max_rounds) == (5, None, 7)
    # A single user who sets a limit in the environment gets that one, and only that one.
    assert server_limits(gpu=False, classroom=False, environ=environ) == Limits(max_epochs=5)
    with pytest.raises(ValueError, match="PRUNING_MAX_EPOCHS must be a whole number"):
        server_limits(gpu=False, classroom=True, environ={"PRUNING_MAX_EPOCHS": "-3"})


@pytest.mark.parametrize("config, name, asked", [
    (RunConfig(epochs=11), "max_epochs", 11),
    (RunConfig(method="synflow", iterations=None), "max_rounds", 100),   # SynFlow's published 100 rounds
    (RunConfig(model="vgg16", method="magnitude", epochs=1), "max_cpu_model_weights", 14_714_432),
])
def test_a_run_above_a_limit_is_refused_with_the_limit_its_value_and_who_can_raise_it(config, name, asked):
    limits = Limits(max_epochs=10, max_rounds=50, max_cpu_model_weights=1_000_000)
    with pytest.raises(LimitExceeded) as refused:
        check_run(config, limits, gpu=False)
    assert (refused.value.name, refused.value.asked) == (name, asked)
    message = str(refused.value)
    assert f"(limit {name})" in message and f"{getattr(limits, name):,}" in message
    assert "teacher can raise it" in message and LIMITS[name].env in message


def test_a_gpu_server_takes_any_model_and_no_limit_refuses_nothing():
    check_run(RunConfig(model="vgg16"), Limits(max_cpu_model_weights=1000), gpu=True)
    check_run(RunConfig(epochs=10 ** 6, iterations=10 ** 5), Limits(), gpu=False)


def test_sweeps_are_limited_in_cells_and_seeds_and_the_queue_per_person_and_in_total():
    cells = [RunConfig(epochs=1, seed=s, sparsity=p) for s in range(3) for p in (0.5, 0.9)]
    with pytest.raises(LimitExceeded, match="max_sweep_cells"):
        check_runs(cells, Limits(max_sweep_cells=5), gpu=False, sweep=True)
    with pytest.raises(LimitExceeded, match="max_seeds") as refused:
        check_runs(cells, Limits(max_seeds=2), gpu=False, sweep=True)
    assert refused.value.asked == 3
    check_runs(cells, Limits(max_sweep_cells=6, max_seeds=3), gpu=False, sweep=True)
    limits = Limits(max_queued_per_user=4, max_queued=10)
    check_queue(limits, adding=2, users_active=2, all_active=8)
    with pytest.raises(LimitExceeded, match="max_queued_per_user"):
        check_queue(limits, adding=3, users_active=2, all_active=0)
    with pytest.raises(LimitExceeded, match="limit max_queued\\)"):
        check_queue(limits, adding=1, users_active=0, all_active=10)


def test_the_readme_documents_every_limit_with_its_variable_and_defaults():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Serving a classroom", 1)[1].split("\n## ", 1)[0]
    assert "PRUNING_TEACHER_PASSWORD" in section
    for limit in LIMITS.values():
        (row,) = [line for line in section.splitlines() if f"`{limit.env}`" in line]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-2:] == [f"{d:,}" if d is not None else "none" for d in (limit.cpu, limit.gpu)], row
