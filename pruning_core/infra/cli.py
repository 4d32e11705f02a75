"""Command line: `python -m pruning_core prune|train|sweep|collapse|runs ...` (each with --help).

Flags for a run come from `RunConfig` (one field, one flag, one help text). Results go to the run store
(--db, default $PRUNING_DB or ./runs/pruning.db) unless --no-store; --json prints machine-readable output.
Bad arguments print one line starting with 'error:' and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import pandas as pd

from pruning_core.config import DYNAMIC_FIELDS, TRAINING_FIELDS, RunConfig

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class ProgressBar:
    """A text progress bar on stderr: redrawn in place on a terminal, one line per phase otherwise."""

    def __init__(self, enabled: bool = True, width: int = 28):
        self.enabled = enabled
        self.width = width
        self.tty = sys.stderr.isatty()
        self.phase = ""
        self.phase_start = time.perf_counter()

    def __call__(self, message: str, done: float, total: float) -> None:
        if not self.enabled:
            return
        phase = message.split(":")[0]
        if phase != self.phase:
            if self.tty and self.phase:
                sys.stderr.write("\n")
            self.phase, self.phase_start = phase, time.perf_counter()
            if not self.tty:
                sys.stderr.write(f"{message}\n")
        if not self.tty:
            return
        fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
        elapsed = time.perf_counter() - self.phase_start
        eta = f" ETA {elapsed / fraction - elapsed:4.0f}s" if 0 < fraction < 1 else ""
        filled = int(self.width * fraction)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%} {message}{eta}   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.phase:
            sys.stderr.write("\n")


# ---- argument helpers -----------------------------------------------------------------------------
def _number_list(kind: type, what: str):
    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list of numbers, got {text!r}")
        if not values:
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        return values

    return parse


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _add_common(parser: argparse.ArgumentParser, store: bool = True) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--data-dir", default=None, help="folder of downloaded datasets (default: $PRUNING_DATA_DIR "
                                                          "or ./data)")
    parser.add_argument("--no-download", action="store_true", help="never download a dataset; fail if it is missing")
    if store:
        parser.add_argument("--db", default=None, help="run store path (default: $PRUNING_DB or ./runs/pruning.db)")
        parser.add_argument("--no-store", action="store_true", help="do not record the run in the store")
        parser.add_argument("--recompute", action="store_true",
                            help="compute again even if the store has a finished run of this configuration")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m pruning_core",
                           description="Prune neural networks at initialization, train them, compare methods.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("prune", help="prune a fresh model and print per-layer densities",
                       description="Prune a freshly initialised model and report per-layer densities, layer "
                                   "collapse and effective (connected) density.")
    RunConfig.add_arguments(p, exclude=(*TRAINING_FIELDS, *DYNAMIC_FIELDS))
    _add_common(p)

    p = sub.add_parser("train", help="prune, then train and evaluate",
                       description="Prune a freshly initialised model, train it with the pruned weights held at "
                                   "zero, and report test accuracy. --sparsity 0 trains the dense baseline.")
    RunConfig.add_arguments(p)
    _add_common(p)

    p = sub.add_parser("sweep", help="methods x sparsities x seeds, with a dense baseline",
                       description="Run prune -> train -> evaluate for every method, sparsity and seed (same "
                                   "initial weights for every method of a seed) plus a dense baseline.")
    p.add_argument("--preset", choices=["quick"], default=None,
                   help="quick: digits, conv, 5 methods x 4 sparsities, 1 seed, 10 epochs (about a minute on a CPU)")
    p.add_argument("--methods", type=_name_list, default=None, help="comma-separated methods (default: synflow,snip)")
    p.add_argument("--sparsities", type=_number_list(float, "--sparsities"), default=None,
                   help="comma-separated sparsities, e.g. 0.9,0.99,0.999 (default: 0.9,0.99)")
    p.add_argument("--seeds", type=_number_list(int, "--seeds"), default=None, help="comma-separated seeds (default: 0)")
    p.add_argument("--no-baseline", action="store_true", help="skip the dense baseline")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: one cell after another in this process (default); ray: every cell as a Ray task, "
                        "side by side (pip install -r requirements-ray.txt)")
    p.add_argument("--address", default=None,
                   help="with --engine ray: join the Ray cluster at HOST:PORT (default: start a local Ray instance)")
    p.add_argument("--cpus-per-cell", type=float, default=None,
                   help="with --engine ray: CPUs each cell reserves (default 1)")
    p.add_argument("--gpus-per-cell", type=float, default=None,
                   help="with --engine ray: GPUs each cell reserves (default 1 where the cluster has GPUs, else 0)")
    RunConfig.add_arguments(p, exclude=("method", "sparsity", "seed"))
    _add_common(p)

    p = sub.add_parser("collapse", help="critical compression: the largest compression before a layer collapses",
                       description="For each method, bisect over log10-compression for the largest compression "
                                   "that leaves every layer with at least one weight.")
    p.add_argument("--methods", type=_name_list, default=None,
                   help="comma-separated methods (default: all but imp and gemminer, which train)")
    p.add_argument("--tolerance", type=float, default=0.05, help="search precision in log10 units (default: 0.05)")
    RunConfig.add_arguments(p, exclude=("method", "sparsity", "sanity", "sparse_init", *TRAINING_FIELDS,
                                        *DYNAMIC_FIELDS))
    _add_common(p, store=False)

    p = sub.add_parser("runs", help="list, show, delete or export stored runs",
                       description="The run store's history.")
    p.add_argument("action", choices=["list", "show", "delete", "export"], nargs="?", default="list")
    p.add_argument("ids", nargs="*", type=int, help="run ids (show, delete, export)")
    p.add_argument("--status", default=None, help="only runs with this status (list)")
    p.add_argument("--limit", type=int, default=20, help="at most this many runs (list; default 20)")
    p.add_argument("--output", "-o", default=None, help="export: write JSON here instead of stdout")
    p.add_argument("--db", default=None, help="run store path (default: $PRUNING_DB or ./runs/pruning.db)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    return parser


# ---- commands -----------------------------------------------------------------------------------------
def _store(args: argparse.Namespace):
    if getattr(args, "no_store", False):
        return None
    from pruning_core.infra.store import Store

    return Store(args.db)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default, allow_nan=False))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _clean(value: Any) -> Any:
    """NaN/inf -> None, recursively, so that the JSON output is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _run(args: argparse.Namespace, kind: str) -> int:
    """`prune` and `train`: run one configuration from the flags through `execute` (reusing a stored result of the
    same key unless --recompute), show a progress bar, print the summary (or JSON) and return 0."""
    from pruning_core.infra.runner import execute

    config = RunConfig.from_args(args).canonical().validate()
    store = _store(args)
    bar = ProgressBar(enabled=not args.quiet)
    try:
        outcome = execute(config, store, kind=kind, reuse=not args.recompute, device=args.device,
                          on_progress=bar, data_root=args.data_dir, download=not args.no_download)
    finally:
        bar.close()
    summary = outcome.summary
    record = {"run_id": outcome.run_id, "key": config.key(), "reused": outcome.reused, "config": config.to_dict(),
              **summary}
    if outcome.prune_result is not None:
        record["layers"] = outcome.prune_result.layers.to_dict(orient="records")
    elif store is not None and outcome.run_id is not None:
        layers = store.layers(outcome.run_id)
        record["layers"] = None if layers is None else layers.to_dict(orient="records")
    if args.json:
        _print_json(_clean(record))
        return 0
    if record.get("layers"):
        layers = pd.DataFrame(record["layers"])
        print(layers[["name", "kind", "shape", "kept", "total", "density", "effective_density"]].to_string(index=False))
    print(f"\n{config.method} at sparsity {config.sparsity:g}: kept {summary.get('kept', '?')} of "
          f"{summary.get('total', '?')} weights (effective density {summary.get('effective_density', 1):.4g})"
          + (" [reused from the store]" if outcome.reused else ""))
    if summary.get("final_test_accuracy") is not None:
        print(f"final test accuracy {summary['final_test_accuracy']:.2%} (best {summary['best_test_accuracy']:.2%}) "
              f"in {summary.get('train_s', 0):.1f}s on {summary.get('device', '?')}")
    if summary.get("mask_updates") is not None:
        print(f"{config.sparse_training}: {summary['mask_updates']} mask updates moved {summary['weights_moved']:,} "
              f"weights; every layer kept its count (final effective density "
              f"{summary.get('final_effective_density', float('nan')):.4g})")
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}")
    if outcome.run_id is not None:
        print(f"run {outcome.run_id} in the store (key {config.key()})")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """`sweep`: a methods x sparsities x seeds grid (or --preset quick) through `pc.sweep`, printing each cell as it
    finishes and the table at the end (or writing --csv)."""
    from pruning_core.studies.presets import PRESETS
    from pruning_core.studies.sweep import SweepCellsFailed, sweep

    grid: dict[str, Any] = {"methods": ["synflow", "snip"], "sparsities": [0.9, 0.99], "seeds": [0]}
    fields = {k: getattr(args, k) for k in vars(args) if k in RunConfig.__dataclass_fields__}
    if args.preset == "quick":
        preset = PRESETS["quick_sweep"]
        grid = dict(preset.grid)
        defaults = RunConfig()
        # The preset's values fill in every field the user left at its default.
        fields.update({k: v for k, v in preset.config.items() if fields.get(k) == getattr(defaults, k)})
    for name in ("methods", "sparsities", "seeds"):
        if getattr(args, name) is not None:
            grid[name] = getattr(args, name)
    resources = None
    if args.cpus_per_cell is not None or args.gpus_per_cell is not None:
        if args.engine != "ray":
            raise UsageError("--cpus-per-cell and --gpus-per-cell need --engine ray")
        resources = {"num_cpus": 1 if args.cpus_per_cell is None else args.cpus_per_cell}
        if args.gpus_per_cell is not None:
            resources["num_gpus"] = args.gpus_per_cell
    if args.address is not None and args.engine != "ray":
        raise UsageError("--address needs --engine ray")
    store = _store(args)
    bar = ProgressBar(enabled=not args.quiet)
    engine = {} if args.engine == "local" else {"engine": "ray", "address": args.address, "resources": resources}
    run = sweep(methods=grid["methods"], sparsities=grid["sparsities"], seeds=grid["seeds"],
                baseline=not args.no_baseline, store=store, reuse=not args.recompute, device=args.device,
                on_progress=bar, **engine, **fields)
    started = time.perf_counter()
    failed = None
    try:
        for i, row in enumerate(run, 1):
            if not args.quiet:
                bar.close()
                accuracy = row["final_test_accuracy"]
                sys.stderr.write(f"cell {i}/{len(run.cells)}: {row['method']} sparsity {row['sparsity']:g} seed "
                                 f"{row['seed']}: accuracy {'-' if accuracy is None else f'{accuracy:.2%}'}"
                                 f"{' (collapsed)' if row['collapsed'] else ''}{' (reused)' if row['reused'] else ''}\n")
                bar.phase = ""
    except SweepCellsFailed as error:
        failed = error  # the Ray engine: the other cells finished; print them, then say what failed
    finally:
        bar.close()
    table = run.table
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.json:
        _print_json(_clean({"cells": table.to_dict(orient="records"), "wall_s": time.perf_counter() - started}))
    else:
        print(table[["method", "sparsity", "seed", "final_test_accuracy", "effective_density", "collapsed",
                     "reused"]].to_string(index=False))
        print(f"\n{len(table)} cells in {time.perf_counter() - started:.1f}s")
    if failed is not None:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


def _collapse(args: argparse.Namespace) -> int:
    """`collapse`: the critical compression (largest compression with no layer collapsed) of each --methods on one
    model and seed, as a table."""
    from pruning_core.engine.data import load_dataset
    from pruning_core.engine.methods import METHODS
    from pruning_core.infra.runner import build_model
    from pruning_core.studies.analysis import critical_compression

    config = RunConfig.from_args(args, method="synflow", sparsity=0.5).validate()
    # By default every method that only scores: IMP and GemMiner would train at every probe.
    methods = args.methods or [name for name, spec in METHODS.items() if spec.run is None]
    for name in methods:
        METHODS[name]  # an unknown name is an error before any work starts
    dataset = load_dataset(config.dataset, root=args.data_dir, download=not args.no_download)
    bar = ProgressBar(enabled=not args.quiet)
    rows = []
    try:
        for name in methods:
            result = critical_compression(
                lambda: build_model(config, dataset), name, dataset,   # seeded as the dashboard's
                seed=config.seed, tolerance=args.tolerance, schedule=config.schedule, iterations=config.iterations,
                scope=config.scope, progress=lambda done, total, _n=name: bar(f"{_n}: probe {done}", done, total))
            rows.append({"method": name, "log_compression": result.log_compression,
                         "compression": result.compression, "sparsity": result.sparsity,
                         "probes": len(result.evaluations)})
    finally:
        bar.close()
    table = pd.DataFrame(rows)
    if args.json:
        _print_json(_clean({"model": config.model, "dataset": config.dataset, "seed": config.seed,
                            "methods": table.to_dict(orient="records")}))
    else:
        print(f"critical compression, {config.model} on {config.dataset}, seed {config.seed} "
              f"(largest 10^x with no empty layer):")
        print(table.to_string(index=False, formatters={"compression": "{:.3g}".format,
                                                       "log_compression": "{:.2f}".format,
                                                       "sparsity": "{:.5f}".format}))
    return 0


def _runs(args: argparse.Namespace) -> int:
    """`runs list | show ID | delete ID | export ID`: read or manage the run store."""
    from pruning_core.infra.store import Store

    store = Store(args.db)
    if args.action == "list":
        runs = store.list_runs(status=args.status, limit=args.limit)
        if args.json:
            _print_json(_clean(runs.to_dict(orient="records")))
        elif runs.empty:
            print("no runs yet: try 'pruning-core train' (or 'python -m pruning_core train')")
        else:
            from pruning_core.presentation.units import run_variant

            # A sanity check or sparsity-aware init is named, so an inverted SynFlow 90% is not a plain one.
            with store.snapshot():
                runs["variant"] = [run_variant(store.get_run(int(r))["config"]) or "-" for r in runs["run_id"]]
            print(runs[["run_id", "status", "kind", "dataset", "model", "method", "variant", "sparsity", "seed",
                        "final_test_accuracy", "duration_s"]].to_string(index=False))
        return 0
    if not args.ids:
        raise UsageError(f"runs {args.action} needs at least one run id")
    if args.action == "show":
        records = [store.get_run(i) for i in args.ids]
        records = [{k: v for k, v in r.items() if k != "owner"} for r in records]
        _print_json(_clean(records if len(records) > 1 else records[0]))
    elif args.action == "delete":
        for run_id in args.ids:
            store.get_run(run_id)  # every id must exist before anything is deleted
        for run_id in args.ids:
            store.delete_run(run_id)
        print(f"deleted {len(args.ids)} run(s)")
    else:
        text = json.dumps(store.export_runs(args.ids), indent=2, allow_nan=False)
        if args.output:
            with open(args.output, "w") as out:
                out.write(text)
            print(f"wrote {len(args.ids)} run(s) to {args.output}")
        else:
            print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "device", None) is not None:
            from pruning_core.engine.arguments import resolve_device

            resolve_device(args.device)   # a device this machine lacks: one error line before any work
        if args.command in ("prune", "train"):
            return _run(args, args.command)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "collapse":
            return _collapse(args)
        return _runs(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, KeyError) as error:  # bad input found while validating: never a traceback
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        print(f"error: {message.splitlines()[0] if message else type(error).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
