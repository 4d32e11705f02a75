"""Sanity checks for pruning at initialization (Frankle et al. 2021, "Pruning Neural Networks at
Initialization: Why are We Missing the Mark?"): train a method's mask and three transformed versions of it,
and say in one sentence what the comparison means.

    table = pc.sanity_checks(method="snip", sparsity=0.9, epochs=5)
    print(pc.explain_sanity(table))

Each variant is one run configuration (`RunConfig.sanity`), run through `pc.execute`, so with a store a
variant that was run before is reused and every variant appears in the run history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from pruning_core.config import SANITY_CHECKS, RunConfig

SANITY_VARIANTS = SANITY_CHECKS   # ("none", "shuffle", "reinit", "invert"): "none" is the method's own mask
SANITY_LABELS = {
    "none": "Method's mask",
    "shuffle": "Mask shuffled within each layer",
    "reinit": "Weights reinitialised",
    "invert": "Scores inverted",
}
SANITY_DESCRIPTIONS = {
    "none": "the mask as the method chose it, trained from the initial weights",
    "shuffle": "the same number of weights kept in every layer, but chosen at random inside each layer",
    "reinit": "the same mask, with the kept weights redrawn at random (same spread per layer)",
    "invert": "the highest-scoring weights removed instead of the lowest",
}
TOLERANCE = 0.01   # accuracy differences within this count as "no change" (run-to-run noise on digits)
SANITY_COLUMNS = ["variant", "label", "description", "test_accuracy", "best_test_accuracy", "density", "run_id",
                  "status", "reused", "change"]


def sanity_checks(config: RunConfig | None = None, store=None, *, variants: Sequence[str] = SANITY_VARIANTS,
                  device: str | torch.device | None = None, reuse: bool = True,
                  on_progress: Callable[[str, float, float], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, **fields: Any) -> pd.DataFrame:
    """Train the method's mask and its sanity-check variants, one run per variant, and tabulate them.

    config: the run to check (method, sparsity, model, dataset, epochs, seed...); keywords override its
      fields, e.g. sanity_checks(method="synflow", sparsity=0.99, epochs=10). Its own `sanity` is ignored.
    store: a pc.Store to record (and, with reuse, reuse) the runs; None runs without recording.
    Returns one row per variant (`sanity_table`): variant, label, description, test_accuracy,
    best_test_accuracy, density, run_id, status, reused, change (accuracy minus that of the method's own
    mask). Read it with `explain_sanity`. on_progress(message, done, total) counts variants; should_stop()
    cancels.
    """
    from pruning_core.infra.runner import execute

    config = (config or RunConfig()).replace(**fields) if fields else (config or RunConfig())
    config = config.validate()
    if config.is_dense:
        raise ValueError("sanity checks compare pruned masks: choose a pruning method and a sparsity above 0")
    variants = list(dict.fromkeys(variants))
    unknown = [v for v in variants if v not in SANITY_VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown sanity check(s) {', '.join(map(str, unknown)) or '(none given)'}; "
                         f"choose from: {', '.join(SANITY_VARIANTS)}")
    runs: dict[str, dict[str, Any]] = {}
    for index, variant in enumerate(variants):
        def progress(message: str, done: float, total: float, _i=index, _v=variant) -> None:
            if on_progress is not None:
                fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
                on_progress(f"{SANITY_LABELS[_v]}: {message}", _i + fraction, len(variants))

        outcome = execute(config.replace(sanity=variant), store, kind="train", device=device, reuse=reuse,
                          on_progress=progress, should_stop=should_stop)
        runs[variant] = {"id": outcome.run_id, "status": "done", "summary": outcome.summary, "reused": outcome.reused}
    return sanity_table(config, runs)


def sanity_table(config: RunConfig, runs: Mapping[str, Mapping[str, Any] | None]) -> pd.DataFrame:
    """The sanity checks of `config` as a table: one row per variant of `runs`, in its order.

    runs: variant -> its run record (as `Store.get_run` returns it: id, status, summary; optionally reused),
      or None for a variant without a run.
    Columns: variant, label, description, test_accuracy, best_test_accuracy, density (NaN until the variant's
    run is done), run_id, status ('not run' without a run), reused, and change (accuracy minus that of the
    method's own mask). `explain_sanity` reads the table and its attrs (method, sparsity, num_classes, ...).
    """
    from pruning_core.engine.data import DATASETS

    rows = []
    for variant, record in runs.items():
        done = record is not None and record.get("status") == "done"
        summary = (record.get("summary") or {}) if done else {}
        rows.append({"variant": variant, "label": SANITY_LABELS[variant], "description": SANITY_DESCRIPTIONS[variant],
                     "test_accuracy": summary.get("final_test_accuracy"),
                     "best_test_accuracy": summary.get("best_test_accuracy"), "density": summary.get("density"),
                     "run_id": record.get("id") if record is not None else None,
                     "status": record.get("status") if record is not None else "not run",
                     "reused": bool(record.get("reused", False)) if record is not None else False})
    table = pd.DataFrame(rows, columns=SANITY_COLUMNS[:-1])
    for column in ("test_accuracy", "best_test_accuracy", "density"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    baseline = table.loc[table["variant"] == "none", "test_accuracy"]
    table["change"] = table["test_accuracy"] - (float(baseline.iloc[0]) if len(baseline) else float("nan"))
    table.attrs.update({"method": config.method, "sparsity": config.sparsity, "model": config.model,
                        "dataset": config.dataset, "epochs": config.epochs,
                        "num_classes": DATASETS[config.dataset].num_classes})
    return table


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def explain_sanity(table: pd.DataFrame, tolerance: float = TOLERANCE, num_classes: int | None = None) -> str:
    """What a `sanity_checks` table means, in plain language (a few sentences).

    A variant "did not hurt" when its accuracy is at least the method's own minus `tolerance`. If
    shuffling does not hurt, the method only chose how many weights to keep per layer (Frankle et al.
    2021 found this for SNIP, GraSP and SynFlow at initialization); if reinitialising does not hurt, the
    mask does not depend on the initial values; if inverting does not hurt, the scores do not rank the
    weights usefully at this sparsity.
    """
    accuracy = dict(zip(table["variant"], table["test_accuracy"]))
    method = table.attrs.get("method", "the method")
    num_classes = num_classes or table.attrs.get("num_classes")
    if "none" not in accuracy or pd.isna(accuracy["none"]):
        return "The method's own mask was not trained, so there is nothing to compare the sanity checks with."
    own = float(accuracy["none"])
    chance = 1.0 / num_classes if num_classes else None
    if chance is not None and own <= chance + tolerance:
        return (f"{method}'s own mask trains only to chance accuracy ({_percent(own)}), so the checks cannot tell "
                "anything apart: the network is too sparse (look for collapsed layers) or was not trained long enough.")
    sentences = [f"{method}'s own mask reaches {_percent(own)}."]

    def verdict(variant: str) -> tuple[bool, str] | None:
        if variant not in accuracy or pd.isna(accuracy[variant]):
            return None
        value = float(accuracy[variant])
        return value >= own - tolerance, f"{_percent(value)}, {100 * (value - own):+.1f} points"

    shuffle = verdict("shuffle")
    if shuffle is not None:
        if shuffle[0]:
            sentences.append(f"Shuffling the mask within each layer did not hurt ({shuffle[1]}): the method's value "
                             "lies only in how many weights it keeps in each layer, not in which ones; any random "
                             "mask with the same layer densities does as well.")
        else:
            sentences.append(f"Shuffling the mask within each layer hurt ({shuffle[1]}): the method chose specific "
                             "weights that matter, beyond the layer densities.")
    reinit = verdict("reinit")
    if reinit is not None:
        if reinit[0]:
            sentences.append(f"Reinitialising the kept weights did not hurt ({reinit[1]}): the mask does not depend on "
                             "the particular initial values.")
        else:
            sentences.append(f"Reinitialising the kept weights hurt ({reinit[1]}): the mask works with these initial "
                             "values, as a lottery ticket does.")
    invert = verdict("invert")
    if invert is not None:
        if invert[0]:
            sentences.append(f"Keeping the lowest-scored weights instead did not hurt ({invert[1]}): at this sparsity "
                             "the scores do not rank the weights usefully.")
        else:
            sentences.append(f"Keeping the lowest-scored weights instead hurt ({invert[1]}): the scores do rank the "
                             "weights usefully.")
    points = 100 * tolerance
    sentences.append(f"(Differences within {points:g} point{'' if points == 1 else 's'} count as no change: that is "
                     "the run-to-run noise of a short training.)")
    return " ".join(sentences)


__all__ = ["sanity_checks", "sanity_table", "explain_sanity", "SANITY_VARIANTS", "SANITY_LABELS", "SANITY_DESCRIPTIONS"]
