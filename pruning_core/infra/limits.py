"""A server's limits: what one request to a shared dashboard may ask for, in one place.

The limits belong to the server, never to the core: the Python API and the CLI stay unlimited. The dashboard
applies them to every submission (a widget's value and a link's parameter go through the same check), and
refuses what is above one with `LimitExceeded`, whose message names the limit, its value and who can raise it;
nothing is queued and nothing is computed then.

Where a limit comes from, last one wins: the default for this device (on a classroom server, one with a
teacher password; a single user on a laptop has no defaults, so nothing changes for them), the environment
variable in LIMITS, and a value the teacher set while the server runs (kept in the run store).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from pruning_core.config import DENSE, RunConfig
from pruning_core.engine.methods import METHODS
from pruning_core.infra.jobs import model_size


@dataclass(frozen=True)
class Limit:
    """One limit: its environment variable, what it bounds (for messages) and its defaults on a CPU / a GPU."""

    env: str
    label: str
    cpu: int | None
    gpu: int | None


# The defaults: a 2-core laptop serving a class finishes a run of the small CNN on digits in seconds; a GPU box
# finishes much more. None: no limit.
LIMITS: dict[str, Limit] = {
    "max_epochs": Limit("PRUNING_MAX_EPOCHS", "training epochs of a run", 30, 200),
    "max_rounds": Limit("PRUNING_MAX_ROUNDS", "pruning rounds of a run", 100, 1000),
    "max_sweep_cells": Limit("PRUNING_MAX_SWEEP_CELLS", "cells of a sweep", 60, 300),
    "max_seeds": Limit("PRUNING_MAX_SEEDS", "seeds of a sweep or study", 3, 5),
    "max_queued_per_user": Limit("PRUNING_MAX_QUEUED_PER_USER", "runs queued or running for one person", 60, 300),
    "max_queued": Limit("PRUNING_MAX_QUEUED", "runs queued or running on the server", 300, 3000),
    "max_cpu_model_weights": Limit("PRUNING_MAX_CPU_MODEL_WEIGHTS", "prunable weights of a model on a CPU-only "
                                   "server", 1_000_000, None),
}
STORE_SETTING = "limits"   # the teacher's changes, in the run store's settings


@dataclass(frozen=True)
class Limits:
    """The limits in force (None: unlimited). `Limits()` is the Python API's and the CLI's: no limit at all."""

    max_epochs: int | None = None
    max_rounds: int | None = None
    max_sweep_cells: int | None = None
    max_seeds: int | None = None
    max_queued_per_user: int | None = None
    max_queued: int | None = None
    max_cpu_model_weights: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LimitExceeded(ValueError):
    """A request above one of the server's limits: which limit, its value, and what was asked."""

    def __init__(self, name: str, value: int, asked: int):
        self.name, self.value, self.asked = name, value, asked
        limit = LIMITS[name]
        super().__init__(f"This asks for {asked:,} {limit.label}; this server allows at most {value:,} "
                         f"(limit {name}). Nothing was queued. The teacher can raise it (on the Classroom "
                         f"page, or with the environment variable {limit.env}).")


def parse_limit(name: str, raw: object) -> int | None:
    """A limit's value from text or a number: a whole number >= 1, or empty / 'none' for no limit."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "off")):
        return None
    text = str(raw).strip()
    if isinstance(raw, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, or 'none' for no limit; got {raw!r}")
    return int(text)


def server_limits(gpu: bool, classroom: bool, environ: Mapping[str, str] | None = None,
                  changes: Mapping[str, object] | None = None) -> Limits:
    """The limits of a dashboard server: the device's defaults when it serves a classroom (none for a single
    user), then the environment's (see LIMITS), then `changes` the teacher made (None there: no limit)."""
    environ = os.environ if environ is None else environ
    values: dict[str, int | None] = {}
    for name, limit in LIMITS.items():
        value = (limit.gpu if gpu else limit.cpu) if classroom else None
        if limit.env in environ:
            value = parse_limit(limit.env, environ[limit.env])
        if changes is not None and name in changes:
            value = parse_limit(name, changes[name])
        values[name] = value
    return Limits(**values)


def rounds_of(config: RunConfig) -> int:
    """The pruning rounds a configuration runs (its own, else its method's published number)."""
    if config.method == DENSE:
        return 0
    return config.iterations or METHODS[config.method].default_iterations


def _check(name: str, limit: int | None, asked: int) -> None:
    if limit is not None and asked > limit:
        raise LimitExceeded(name, limit, asked)


def check_run(config: RunConfig, limits: Limits, gpu: bool) -> None:
    """Raise LimitExceeded when one run of `config` asks for more than `limits` allow on this device."""
    _check("max_epochs", limits.max_epochs, config.epochs)
    _check("max_rounds", limits.max_rounds, rounds_of(config))
    if not gpu and limits.max_cpu_model_weights is not None:
        _check("max_cpu_model_weights", limits.max_cpu_model_weights, model_size(config.model, config.dataset)[0])


def check_runs(configs: Sequence[RunConfig], limits: Limits, gpu: bool, sweep: bool = False) -> None:
    """Every run of a request (a sweep's cells with `sweep`), and the request's number of cells and seeds."""
    if sweep:
        _check("max_sweep_cells", limits.max_sweep_cells, len(configs))
    _check("max_seeds", limits.max_seeds, len({c.seed for c in configs}))
    for config in configs:
        check_run(config, limits, gpu)


def check_queue(limits: Limits, adding: int, users_active: int, all_active: int) -> None:
    """Raise LimitExceeded when `adding` new runs would take a person's (`users_active` now) or the server's
    (`all_active` now) queued and running runs above the limits."""
    if adding <= 0:
        return
    _check("max_queued_per_user", limits.max_queued_per_user, users_active + adding)
    _check("max_queued", limits.max_queued, all_active + adding)
