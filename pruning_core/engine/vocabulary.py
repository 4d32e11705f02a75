"""The engine's fixed vocabularies: the names a schedule, scope, sanity check, optimizer, learning-rate schedule or
sparse-training mode may take. `RunConfig` offers them as choices; the engine checks its arguments against them."""

SCHEDULES = ("exponential", "linear")
SCOPES = ("global", "layerwise")
SANITY_CHECKS = ("none", "shuffle", "reinit", "invert")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("onecycle", "cosine", "constant")
GEMMINER_INITS = ("model", "signed_constant")   # weights GemMiner mines on
SPARSE_TRAINING = ("static", "set", "rigl")       # how a mask evolves in training: fixed, or dynamic (SET, RigL)

DENSE = "dense"  # the method name of an unpruned baseline run (sparsity 0)
