"""pruning_core: pruning neural networks at initialization, behind one public API.

    import pruning_core as pc
    model = pc.MODELS["conv"]((1, 8, 8), 10)
    result = pc.prune(model, "synflow", 0.99, input_shape=(1, 8, 8))
    result.layers, result.collapsed

The engine knows nothing of the dashboard; the dashboard, the command line (`python -m pruning_core`)
and notebooks all use the names exported here.
"""

from pruning_core.config import DENSE, RunConfig, help_text
from pruning_core.engine import methods_dynamics  # noqa: F401  registers SynFlow-L2, PX, NTK-SAP, ProsPr
from pruning_core.engine.data import DATASETS, Dataset, DatasetSpec, DatasetUnavailableError, load_dataset
from pruning_core.engine.layers import effective_masks, layer_table
from pruning_core.engine.masks import attach_masks, attached_masks, detach_masks, enforce_masks, prunable_weights
from pruning_core.engine.methods import METHODS, MethodSpec, ScoringContext
from pruning_core.engine.models import MODELS, ModelSpec
from pruning_core.engine.prune import Cancelled, PruneResult, prune
from pruning_core.engine.training import TrainEvent, TrainingRun, TrainResult, evaluate, train
from pruning_core.infra.runner import build_model, execute
from pruning_core.infra.store import Store
from pruning_core.registry import UnknownNameError
from pruning_core.studies.analysis import CriticalCompression, critical_compression, layer_synaptic_flow
from pruning_core.studies.gradient_flow import gradient_flow, gradient_norm, sparse_init
from pruning_core.studies.lottery import method_cost
from pruning_core.studies.relearning import lottery_relearning
from pruning_core.studies.sanity import explain_sanity, sanity_checks
from pruning_core.studies.sweep import SweepRun, sweep

__all__ = [
    "train", "TrainingRun", "TrainEvent", "TrainResult", "evaluate", "sweep", "SweepRun", "DATASETS", "Dataset",
    "DatasetSpec", "DatasetUnavailableError", "load_dataset", "Store", "execute", "build_model", "sparse_init",
    "DENSE", "prune", "PruneResult", "Cancelled", "METHODS", "MethodSpec", "ScoringContext", "MODELS", "ModelSpec",
    "RunConfig", "help_text", "critical_compression", "CriticalCompression", "layer_synaptic_flow",
    "layer_table", "effective_masks", "attach_masks", "attached_masks", "detach_masks", "enforce_masks",
    "prunable_weights", "UnknownNameError", "gradient_flow", "gradient_norm", "method_cost", "sanity_checks",
    "explain_sanity", "lottery_relearning",
]
