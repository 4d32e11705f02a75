"""Training hyperparameters: `TrainSettings`, the resolved settings one training runs with.

Its fields without a default are the settings every dataset gives a default for (`TRAIN_DEFAULT_KEYS`) and
`RunConfig`'s training fields; a test keeps the three the same."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pruning_core.engine.vocabulary import LR_SCHEDULES, OPTIMIZERS

if TYPE_CHECKING:
    from pruning_core.engine.data import Dataset


@dataclass(frozen=True)
class TrainSettings:
    """Resolved training hyperparameters (dataset defaults overridden by the caller's values)."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    lr_schedule: str
    weight_decay: float
    label_smoothing: float
    momentum: float = 0.9

    @classmethod
    def resolve(cls, dataset: Dataset, **overrides: Any) -> TrainSettings:
        values = dict(dataset.spec.train_defaults)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**{name: values[name] for name in TRAIN_DEFAULT_KEYS})
        settings.validate()
        return settings

    def validate(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be a whole number >= 0, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1):
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


# The settings a dataset gives defaults for and a caller may override (momentum is fixed).
TRAIN_DEFAULT_KEYS = tuple(f.name for f in dataclasses.fields(TrainSettings) if f.default is dataclasses.MISSING)
