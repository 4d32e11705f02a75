"""Sparsity and compression 10^x, the two vocabularies of how much is pruned: the engine's conversions, which
studies use to name levels and the presentation layer uses to word them."""

from __future__ import annotations

import math


def log_compression(sparsity: float) -> float:
    """x in compression 10^x for a sparsity (0.99 -> 2.0); 0 for a dense network."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return -math.log10(1.0 - sparsity)


def sparsity_from_log(x: float) -> float:
    """The sparsity of compression 10^x, rounded so that 10^2 gives exactly 0.99 (stable config keys)."""
    if x < 0:
        raise ValueError(f"log compression must be >= 0, got {x}")
    return round(1.0 - 10.0 ** (-x), 6)
