"""The engine's fixed vocabularies: the names a schedule, scope, sanity check, optimizer or learning-rate schedule
may take. `RunConfig` offers them as choices; the engine checks its arguments against them."""

SCHEDULES = ("exponential", "linear")
SCOPES = ("global", "layerwise")
SANITY_CHECKS = ("none", "shuffle", "reinit", "invert")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("onecycle", "cosine", "constant")
GEMMINER_INITS = ("model", "signed_constant")   # weights GemMiner mines on

DENSE = "dense"  # the method name of an unpruned baseline run (sparsity 0)
