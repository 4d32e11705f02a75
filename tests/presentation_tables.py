"""Hand-made tables for the presentation tests (units, findings, charts): layer tables, metric rows, sweep
cells, lottery-ticket costs and gradient-flow measurements, small enough to check every number by hand."""

import pandas as pd

from pruning_core.engine.layers import LAYER_COLUMNS


def layer_table(kept, total=(288, 18432, 73728, 1280), effective=None):
    names = ["conv1.weight", "conv2.weight", "conv3.weight", "fc.weight"][:len(kept)]
    effective = effective if effective is not None else kept
    rows = []
    for name, k, t, e in zip(names, kept, total, effective):
        rows.append({"name": name, "kind": "conv", "shape": "x", "total": t, "kept": k, "density": k / t,
                     "effective_kept": e, "effective_density": e / t, "flops_dense": 2 * t, "flops_kept": 2 * k})
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def metrics(accuracies):
    rows = [{"step": 0, "epoch": 0, "train_loss": None, "test_loss": 2.3, "test_accuracy": 0.1, "elapsed_s": 0.1}]
    for i, acc in enumerate(accuracies, start=1):
        rows.append({"step": 10 * i - 5, "epoch": i - 0.5, "train_loss": 2.0 / i, "test_loss": None,
                     "test_accuracy": None, "elapsed_s": i - 0.5})
        rows.append({"step": 10 * i, "epoch": i, "train_loss": 1.8 / i, "test_loss": 1.5 / i, "test_accuracy": acc,
                     "elapsed_s": float(i)})
    return pd.DataFrame(rows)


def with_search_rows(rows: pd.DataFrame) -> pd.DataFrame:
    search = pd.DataFrame([{"step": i, "phase": "search", "round": i, "density": d, "trained_test_accuracy": a}
                           for i, (d, a) in enumerate(((1.0, 0.9), (0.46, 0.93)))])
    return pd.concat([search, rows], ignore_index=True).sort_values("step", kind="stable")


def sweep_rows():
    rows = [{"method": "dense", "sparsity": 0.0, "seed": s, "final_test_accuracy": a, "collapsed": False}
            for s, a in ((0, 0.96), (1, 0.98))]
    for seed, offset in ((0, 0.0), (1, 0.02)):
        for sparsity, acc in ((0.9, 0.95), (0.99, 0.9), (0.999, 0.6)):
            rows.append({"method": "synflow", "sparsity": sparsity, "seed": seed, "final_test_accuracy": acc + offset,
                         "collapsed": False})
        for sparsity, acc, collapsed in ((0.9, 0.94, False), (0.99, 0.5, False), (0.999, 0.1, True)):
            rows.append({"method": "magnitude", "sparsity": sparsity, "seed": seed,
                         "final_test_accuracy": acc + offset, "collapsed": collapsed})
    return pd.DataFrame(rows)


def cost_table():
    return pd.DataFrame([
        {"method": "imp", "test_accuracy": 0.958, "search_s": 5.0, "train_s": 1.2, "search_steps": 66,
         "train_steps": 22},
        {"method": "gemminer", "test_accuracy": 0.85, "search_s": 1.25, "train_s": 1.0, "search_steps": 22,
         "train_steps": 22},
        {"method": "synflow", "test_accuracy": None, "search_s": None, "train_s": None, "search_steps": None,
         "train_steps": None},
    ])


def flow_table():
    rows = []
    for variant, label, density, norms, accuracies in (
            ("dense", "Dense", 1.0, [4.0, 3.0, 2.0], [0.1, 0.8]),
            ("sparse", "Sparse, standard init", 0.1, [0.01, 0.02, 0.03], [0.1, 0.1]),
            ("sparse_init", "Sparse, sparsity-aware init", 0.1, [5.0, 1.0, 0.5], [0.05, 0.66]),
            ("lottery", "Lottery ticket (IMP)", 0.1, [0.6, 0.5, 0.4], [0.76, 0.94])):
        for step, norm in zip((0, 5, 10), norms):
            accuracy = accuracies[0] if step == 0 else accuracies[1] if step == 10 else None
            rows.append({"variant": variant, "label": label, "step": step, "epoch": step / 10, "grad_norm": norm,
                         "train_loss": 1.0, "test_accuracy": accuracy, "density": density})
    return pd.DataFrame(rows).astype({"test_accuracy": float})
