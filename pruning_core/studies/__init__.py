"""Studies built on the engine: layer analyses and critical compression, lottery tickets (IMP, GemMiner), sanity
checks, gradient flow and sweeps."""
