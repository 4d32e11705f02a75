"""Checks of the arguments that every engine entry point shares (seeds, devices), so that `pc.prune`,
`pc.train`, `RunConfig` and the CLI accept and refuse the same values with the same words."""

from __future__ import annotations

from typing import Any

import torch

SEED_MAX = 2**31 - 1   # seeds are 0 .. 2^31 - 1 everywhere: SQLite's integers and every RNG take them


def check_seed(seed: Any) -> int:
    """The seed as an int, or a ValueError saying which values are allowed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be a whole number from 0 to {SEED_MAX} (2^31 - 1), got {seed!r}")
    return int(seed)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on (None: the GPU if there is one, else the CPU), or a ValueError that says what to
    choose instead when it does not exist here."""
    if device is None:
        return default_device()
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N' ({error})") from None
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for a GPU, but this machine has no CUDA GPU; use 'cpu' "
                             "(or leave the device unset to use a GPU when there is one)")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                             f"GPU(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif target.type != "cpu":
        raise ValueError(f"device {device!r} is not supported: use 'cpu' or 'cuda'")
    return target


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return "CPU"
