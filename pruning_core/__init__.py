"""pruning_core: pruning neural networks at initialization, behind one public API.

    import pruning_core as pc
    model = pc.MODELS["conv"]((1, 8, 8), 10)
    result = pc.prune(model, "synflow", 0.99, input_shape=(1, 8, 8))
    result.layers, result.collapsed

The engine knows nothing of the dashboard; the dashboard, the command line (`python -m pruning_core`)
and notebooks all use the names exported here.
"""

from .analysis import (CriticalCompression, critical_compression, effective_masks, layer_synaptic_flow,
                       layer_table)
from .config import DENSE, RunConfig, help_text
from .data import DATASETS, Dataset, DatasetSpec, DatasetUnavailableError, load_dataset
from .gradient_flow import gradient_flow, gradient_norm, sparse_init
from .lottery import method_cost
from .masks import attach_masks, attached_masks, detach_masks, enforce_masks, prunable_weights
from .methods import METHODS, MethodSpec, ScoringContext
from .models import MODELS, ModelSpec
from .prune import Cancelled, PruneResult, prune
from .registry import UnknownNameError
from .runner import build_model, execute
from .sanity import explain_sanity, sanity_checks
from .store import Store
from .sweep import SweepRun, sweep
from .training import TrainEvent, TrainingRun, TrainResult, evaluate, train

__all__ = [
    "train", "TrainingRun", "TrainEvent", "TrainResult", "evaluate", "sweep", "SweepRun", "DATASETS", "Dataset",
    "DatasetSpec", "DatasetUnavailableError", "load_dataset", "Store", "execute", "build_model", "sparse_init",
    "DENSE", "prune", "PruneResult", "Cancelled", "METHODS", "MethodSpec", "ScoringContext", "MODELS", "ModelSpec",
    "RunConfig", "help_text", "critical_compression", "CriticalCompression", "layer_synaptic_flow",
    "layer_table", "effective_masks", "attach_masks", "attached_masks", "detach_masks", "enforce_masks",
    "prunable_weights", "UnknownNameError", "gradient_flow", "gradient_norm", "method_cost", "sanity_checks",
    "explain_sanity",
]
