"""Studies that are not runs of one configuration, queued in the job queue like runs: the Layer collapse page's
study (critical compression of every method, per-layer densities across compression levels, SynFlow's
conservation law) and the Gradient flow page's measurement (pc.gradient_flow).

A study is a run of kind STUDY_KIND in the store: its parameters are the run's config (`collapse_spec`,
`gradient_flow_spec`), `study_key` names its result, a worker process runs it (`run_study`) and writes its
progress, and its result tables are stored as JSON in the run's summary (`study_tables` reads them back). So
every viewer sees its place in the one queue and can cancel it, and a finished study is reused, not recomputed.
Nothing here knows about Streamlit.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from pruning_core.config import RunConfig
from pruning_core.engine.compression import sparsity_from_log
from pruning_core.engine.data import load_dataset
from pruning_core.engine.methods import METHODS
from pruning_core.engine.prune import Cancelled
from pruning_core.infra import runner
from pruning_core.infra.store import InvalidTransitionError, Store
from pruning_core.studies.analysis import critical_compression, layer_synaptic_flow

LEVELS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)   # log10 compression levels of the heat map
STUDY_KIND = "study"                          # the store's run kind of a study


class Progress:
    """Where a study reports its progress: `report(message, done, total)`; raises Cancelled once `cancelled`."""

    def __init__(self) -> None:
        self.cancelled = False

    def report(self, message: str, done: float, total: float) -> None:
        if self.cancelled:
            raise Cancelled(message)


class StoreProgress(Progress):
    """A study's progress written to its run in the store; the run cancelled there (by any viewer) stops it."""

    def __init__(self, store: Store, run_id: int):
        super().__init__()
        self.store, self.run_id = store, run_id

    def report(self, message: str, done: float, total: float) -> None:
        if self.store.update_progress(self.run_id, done, total, message) == "cancelled":
            self.cancelled = True
        super().report(message, done, total)


def collapse_study(dataset: str, model: str, seed: int, methods: Sequence[str], levels: Sequence[float] = LEVELS,
                   task: Progress | None = None) -> dict[str, pd.DataFrame]:
    """For one model and seed: every method's critical compression, every method's per-layer density at each
    compression level, and SynFlow's per-layer conservation (at initialization, and after SynFlow pruning
    at each level).

    Returns DataFrames: 'critical' (method, log_compression, max_log_compression), 'densities' (method,
    log_compression, layer, density, kept, total) and 'flow' (stage, log_compression, name, total_score,
    synaptic_flow, ratio).
    """
    data = load_dataset(dataset, download=False)
    base = RunConfig(dataset=dataset, model=model, seed=seed, epochs=0)

    def fresh() -> torch.nn.Module:
        return runner.build_model(base, data)

    steps = len(methods) * (1 + len(levels))
    done = 0

    def report(message: str) -> None:
        if task is not None:
            task.report(message, done, steps)

    critical, densities, flows = [], [], []
    init_flow = layer_synaptic_flow(fresh(), data.input_shape)
    flows.append(init_flow.assign(stage="at initialization", log_compression=0.0))
    for method in methods:
        label = METHODS[method].label
        report(f"critical compression of {label}")
        result = critical_compression(fresh, method, data, seed=seed, input_shape=data.input_shape,
                                      progress=lambda *_: report(f"critical compression of {label}"))
        # The bisection's first probe is its upper limit (one weight left in the whole network).
        limit = result.evaluations[0]["log_compression"] if result.evaluations else result.log_compression
        critical.append({"method": method, "log_compression": result.log_compression, "max_log_compression": limit})
        done += 1
        for level in levels:
            report(f"{method} at compression 10^{level:.1f}")
            config = base.replace(method=method, sparsity=sparsity_from_log(level))
            net = fresh()
            pruned = runner.prune_with_config(net, config, data)
            for row in pruned.layers.itertuples():
                densities.append({"method": method, "log_compression": level, "layer": row.name,
                                  "density": row.density, "kept": row.kept, "total": row.total})
            if method == "synflow":
                flow = layer_synaptic_flow(fresh(), data.input_shape, pruned.masks)
                flows.append(flow.assign(stage=f"after SynFlow to 10^{level:.1f}", log_compression=level))
            done += 1
    report("done")
    return {"critical": pd.DataFrame(critical), "densities": pd.DataFrame(densities),
            "flow": pd.concat(flows, ignore_index=True)}


def gradient_flow_study(dataset: str, model: str, method: str, sparsity: float, epochs: int, seed: int,
                        variants: Sequence[str], task: Progress | None = None,
                        device: str | torch.device | None = None) -> pd.DataFrame:
    """`pc.gradient_flow` for the Gradient flow page: the dataset must be on disk (nothing is downloaded
    here); progress goes to the task, whose cancel stops the computation at its next measurement."""
    from pruning_core.studies.gradient_flow import gradient_flow

    data = load_dataset(dataset, download=False)
    return gradient_flow(model, data, sparsity, method, list(variants), epochs, seed=seed, device=device,
                         progress=task.report if task is not None else None,
                         should_stop=(lambda: task.cancelled) if task is not None else None)


def relearning_study(dataset: str, model: str, sparsity: float, epochs: int, seed: int,
                     task: Progress | None = None, device: str | None = None) -> pd.DataFrame:
    """`pc.lottery_relearning` for the Gradient flow page, on a dataset already on disk; progress goes to the
    task, whose cancel stops it at its next training step."""
    from pruning_core.studies.relearning import lottery_relearning

    data = load_dataset(dataset, download=False)
    return lottery_relearning(model, data, sparsity, epochs, seed=seed, device=device,
                              progress=task.report if task is not None else None,
                              should_stop=(lambda: task.cancelled) if task is not None else None)


# ---- studies in the job queue -------------------------------------------------------------------------------
def collapse_spec(dataset: str, model: str, seed: int, methods: Sequence[str],
                  levels: Sequence[float] = LEVELS) -> dict[str, Any]:
    """The queued study of the Layer collapse page, as a run's config."""
    return {"study": "collapse", "dataset": dataset, "model": model, "seed": int(seed), "methods": list(methods),
            "levels": [float(x) for x in levels]}


def gradient_flow_spec(dataset: str, model: str, method: str, sparsity: float, epochs: int, seed: int,
                       variants: Sequence[str]) -> dict[str, Any]:
    """The queued measurement of the Gradient flow page, as a run's config."""
    return {"study": "gradient_flow", "dataset": dataset, "model": model, "method": method,
            "sparsity": float(sparsity), "epochs": int(epochs), "seed": int(seed), "variants": list(variants)}


def relearning_spec(dataset: str, model: str, sparsity: float, epochs: int, seed: int) -> dict[str, Any]:
    """The queued relearning measurement of the Gradient flow page (does the ticket relearn its pruning
    solution?), as a run's config."""
    return {"study": "relearning", "dataset": dataset, "model": model, "sparsity": float(sparsity),
            "epochs": int(epochs), "seed": int(seed)}


def study_key(spec: Mapping[str, Any]) -> str:
    """The store key of a study's result: the same parameters, the same key."""
    text = json.dumps(dict(spec), sort_keys=True, separators=(",", ":"))
    return f"study-{spec['study']}-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def _run_spec(spec: Mapping[str, Any], task: Progress, device: str | None) -> dict[str, pd.DataFrame]:
    params = {k: v for k, v in spec.items() if k != "study"}
    if spec["study"] == "collapse":
        return collapse_study(**params, task=task)
    if spec["study"] == "gradient_flow":
        return {"measurements": gradient_flow_study(**params, task=task, device=device)}
    if spec["study"] == "relearning":
        return {"relearning": relearning_study(**params, task=task, device=device)}
    raise ValueError(f"unknown study {spec['study']!r}; choose collapse, gradient_flow or relearning")


def run_study(store: Store, run_id: int, device: str | None = None,
              run: Callable[[Mapping[str, Any], Progress, str | None], dict[str, pd.DataFrame]] = _run_spec) -> None:
    """Run a queued study (in a worker): start it, report its progress to the store, store its tables in its
    summary. A failure is recorded with its message (not its traceback) and raised; a cancel is recorded."""
    store.start_run(run_id, str(device or "cpu"))
    progress = StoreProgress(store, run_id)
    try:
        tables = run(store.get_run(run_id)["config"], progress, device)
        store.finish_run(run_id, {"tables": {name: encode_table(df) for name, df in tables.items()}})
    except Cancelled:
        _settle(store.cancel_run, run_id)
        raise
    except Exception as error:
        _settle(store.fail_run, run_id, runner.describe_error(error))
        raise


def _settle(change: Callable[..., None], *args: Any) -> None:
    try:
        change(*args)
    except InvalidTransitionError:
        pass   # already cancelled by a viewer


def study_tables(record: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """A finished study's result tables, from its run record."""
    return {name: decode_table(text) for name, text in ((record.get("summary") or {}).get("tables") or {}).items()}


def encode_table(df: pd.DataFrame) -> str:
    """A result table as JSON text that `decode_table` turns back into the same frame (values and dtypes)."""
    return json.dumps({"dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
                       "frame": json.loads(df.reset_index(drop=True).to_json(orient="split", index=False))})


def decode_table(text: str) -> pd.DataFrame:
    payload = json.loads(text)
    frame = pd.read_json(io.StringIO(json.dumps(payload["frame"])), orient="split", dtype=False)
    return frame.astype(payload["dtypes"]) if len(frame.columns) else frame
