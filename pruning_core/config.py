"""One description of a run: the `RunConfig` dataclass.

Every field is written once, here, with its help text and allowed values. From it come:
the command line flags (`add_arguments` / `from_args`), the dashboard widgets' `help=`
(`help_text`), the run store's record (`to_dict`), the validation of user input
(`validate`) and the stable `key()` that names a result, so that the same configuration
and seed is never computed twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pruning_core.engine.arguments import SEED_MAX
from pruning_core.engine.data import DATASETS
from pruning_core.engine.methods import METHODS
from pruning_core.engine.models import MODELS
from pruning_core.engine.sparse_training import (DEFAULT_DROP_FRACTION, DEFAULT_UPDATE_EVERY, DEFAULT_UPDATE_UNTIL,
                                                 STATIC)
from pruning_core.engine.vocabulary import (DENSE, GEMMINER_INITS, LR_SCHEDULES, OPTIMIZERS, SANITY_CHECKS,
                                           SCHEDULES, SCOPES, SPARSE_TRAINING)
from pruning_core.registry import Registry

# Bump when a change to the code makes old results with the same fields different,
# so that cached results are recomputed instead of reused.
CONFIG_VERSION = 1


def _registry_names(registry: Registry, extra: Sequence[str] = ()) -> Callable[[], Sequence[str]]:
    """The registry's names at the time of asking, so that a method registered later is a valid choice."""
    def names() -> Sequence[str]:
        return list(registry) + list(extra)

    return names


TRAINING = "training"   # group of the fields that are training settings (pc.train's keyword arguments)
# Group of the fields of dynamic sparse training (pc.train's sparse_training and its knobs): not training settings
# (IMP and GemMiner do not search with them), and left out of the key while static, so old keys stay valid.
DYNAMIC = "sparse_training"


def option(default: Any, help: str, choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
           minimum: float | None = None, maximum: float | None = None, below: float | None = None,
           above: float | None = None, label: str | None = None, group: str | None = None, method: str | None = None,
           option_name: str | None = None) -> Any:
    """A config field with its help text and allowed values (`below` / `above`: exclusive maximum / minimum).

    `group=TRAINING` marks a training setting, `group=DYNAMIC` one of dynamic sparse training. `method` marks
    an option of one method (IMP, GemMiner): it is handed to that method as pc.prune's option `option_name`
    (default: the field's name), is ignored (and left out of the key) for every other method, and must stay
    None by default so that adding such a field leaves every existing result's key unchanged."""
    if method is not None and default is not None:
        raise ValueError("a method option's default must be None (the method's own default applies)")
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "below": below,
        "above": above, "label": label, "group": group, "method": method, "option": option_name,
    })


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines the result of one prune-then-train run."""

    dataset: str = option("digits", "Dataset to prune and train on. 'digits' (8x8 handwritten digits) ships "
                          "with the app: no download, seconds on a CPU.", choices=_registry_names(DATASETS),
                          label="Dataset")
    model: str = option("conv", "Network architecture, built fresh with Kaiming initialisation.",
                        choices=_registry_names(MODELS), label="Model")
    method: str = option("synflow", "How each weight is scored before the lowest-scoring ones are removed "
                         "('dense' = no pruning, the baseline).", choices=_registry_names(METHODS, (DENSE,)),
                         label="Pruning method")
    sparsity: float = option(0.99, "Fraction of prunable weights removed (0.99 = 99% removed = compression 10^2). "
                             "0 trains the dense network.", minimum=0.0, below=1.0, label="Sparsity")
    schedule: str = option("exponential", "How density shrinks over the pruning rounds: 'exponential' removes the "
                           "same fraction of the remaining weights each round, 'linear' the same number.",
                           choices=SCHEDULES, label="Schedule")
    iterations: int | None = option(None, "Pruning rounds (1 = one-shot). Empty uses the method's published "
                                    "default (SynFlow: 100).", minimum=1, label="Rounds")
    scope: str = option("global", "'global' ranks all layers' weights together; 'layerwise' removes the same "
                        "fraction from every layer.", choices=SCOPES, label="Scope")
    sanity: str = option("none", "Sanity check (Frankle et al. 2021): 'shuffle' permutes each layer's mask, "
                         "'reinit' redraws the kept weights, 'invert' removes the highest scores instead.",
                         choices=SANITY_CHECKS, label="Sanity check")
    sparse_init: bool = option(False, "Re-initialise the kept weights with the sparsity-aware initialisation of "
                               "Evci et al. 2022 (variance scaled by each unit's kept fan-in).",
                               label="Sparsity-aware init")
    epochs: int = option(10, "Training epochs after pruning (0 = prune and evaluate only).", minimum=0,
                         label="Epochs", group=TRAINING)
    batch_size: int | None = option(None, "Training batch size. Empty uses the dataset's default.", minimum=1,
                                    label="Batch size", group=TRAINING)
    optimizer: str | None = option(None, "Optimizer: 'sgd' (Nesterov momentum 0.9) or 'adam'. Empty uses the "
                                   "dataset's default.", choices=OPTIMIZERS, label="Optimizer", group=TRAINING)
    lr: float | None = option(None, "Peak learning rate. Empty uses the dataset's default.", minimum=0.0,
                              label="Learning rate", group=TRAINING)
    lr_schedule: str | None = option(None, "Learning-rate schedule over training. Empty uses the dataset's "
                                     "default.", choices=LR_SCHEDULES, label="LR schedule", group=TRAINING)
    weight_decay: float | None = option(None, "L2 weight decay. Empty uses the dataset's default.", minimum=0.0,
                                        label="Weight decay", group=TRAINING)
    label_smoothing: float | None = option(None, "Label smoothing of the cross-entropy loss. Empty uses the "
                                           "dataset's default.", minimum=0.0, below=1.0, label="Label smoothing",
                                           group=TRAINING)
    sparse_training: str = option(STATIC, "How the mask evolves while training: 'static' keeps the pruned mask; "
                                  "'set' (Mocanu et al. 2018) and 'rigl' (Evci et al. 2020) drop each layer's "
                                  "smallest weights every few steps and regrow as many (SET at random, RigL where "
                                  "the dense gradient is largest), each layer keeping its number of weights. RigL "
                                  "starts from 'random_erk' (Erdős–Rényi-Kernel layer densities).",
                                  choices=SPARSE_TRAINING, label="Sparse training", group=DYNAMIC)
    update_every: int | None = option(None, f"SET / RigL: training steps between mask updates (ΔT). Empty: "
                                      f"{DEFAULT_UPDATE_EVERY}, RigL's (a digits epoch is about 11 steps).",
                                      minimum=1, label="Mask update every (steps)", group=DYNAMIC)
    drop_fraction: float | None = option(None, "SET / RigL: fraction α of each layer's kept weights moved at the "
                                         "first update; it decays as α/2·(1 + cos(π t / T_end)) to zero at T_end. "
                                         f"Empty: {DEFAULT_DROP_FRACTION}.", above=0.0, maximum=1.0,
                                         label="Drop fraction α", group=DYNAMIC)
    update_until: float | None = option(None, "SET / RigL: fraction of training (T_end) after which the mask stays "
                                        f"fixed. Empty: {DEFAULT_UPDATE_UNTIL}.", above=0.0, maximum=1.0,
                                        label="Update until (fraction of training)", group=DYNAMIC)
    prune_batches: int | None = option(None, "Batches of training data that data-driven methods (SNIP, GraSP, "
                                       "FORCE) score on. Empty uses the method's default.", minimum=1,
                                       label="Scoring batches")
    prune_fraction: float | None = option(None, "IMP: fraction of the remaining weights removed per round (the "
                                          "paper's 0.2); sets the number of rounds. Empty: the rounds follow the "
                                          "schedule.", above=0.0, below=1.0, label="IMP: pruned per round",
                                          method="imp")
    rewind_step: int | None = option(None, "IMP: training step the surviving weights are rewound to after each "
                                     "round (0 = the original initialisation, the original lottery ticket; a few "
                                     "hundred = late rewinding). Empty: 0.", minimum=0, label="IMP: rewind to step",
                                     method="imp")
    score_lr: float | None = option(None, "GemMiner: learning rate of the scores (the paper's 0.1 is for tens of "
                                    "thousands of steps). Empty: 10, which moves the scores in a digits-sized run.",
                                    above=0.0, label="GemMiner: score learning rate", method="gemminer")
    regularization: float | None = option(None, "GemMiner: weight λ of the sparsity regulariser λ‖p‖² on the "
                                          "scores. Empty: the paper's 1e-4.", minimum=0.0,
                                          label="GemMiner: regularisation", method="gemminer")
    gemminer_init: str | None = option(None, "GemMiner: mine on the model's own random weights ('model') or on "
                                       "the paper's signed constants sign(w)·√(2/fan_in) ('signed_constant'). "
                                       "Empty: 'model'.", choices=GEMMINER_INITS, label="GemMiner: weights",
                                       method="gemminer", option_name="init")
    seed: int = option(0, "Random seed for the initial weights, data order and random pruning; the same seed "
                       "gives the same initial weights to every method.", minimum=0, maximum=SEED_MAX,
                       label="Seed")

    # ---- derived views -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # Every field holds an immutable scalar, so no deep copy (dataclasses.asdict's) is needed: a key is
        # computed per submitted cell and per poll.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a stored or user-supplied dict; unknown keys are an error, missing keys take defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}")
        return cls(**values)

    def canonical(self) -> RunConfig:
        """The same computation written one way: an unpruned run (sparsity 0) ignores every pruning
        field, so all of them map to one 'dense' configuration and share one key."""
        if self.sparsity == 0 or self.method == DENSE:
            return dataclasses.replace(self, method=DENSE, sparsity=0.0, schedule="exponential", iterations=None,
                                       scope="global", sanity="none", sparse_init=False, prune_batches=None,
                                       sparse_training=STATIC, **{f.name: None for f in METHOD_OPTION_FIELDS},
                                       **{name: None for name in DYNAMIC_OPTIONS})
        unused = {f.name: None for f in METHOD_OPTION_FIELDS if f.metadata["method"] != self.method}
        if self.sparse_training == STATIC:   # a static mask has no updates to tune
            unused.update(dict.fromkeys(DYNAMIC_OPTIONS))
        return dataclasses.replace(self, **unused) if any(getattr(self, n) is not None for n in unused) else self

    @property
    def is_dense(self) -> bool:
        return self.canonical().method == DENSE

    def key(self) -> str:
        """Stable 16-hex-digit name of this configuration (same computation and seed -> same key)."""
        fields = self.canonical()._typed_values()
        for f in METHOD_OPTION_FIELDS:   # unset method options are not part of the key: old keys stay valid
            if fields[f.name] is None:
                del fields[f.name]
        if fields["sparse_training"] == STATIC:   # nor is static training, or an unset knob of SET / RigL
            del fields["sparse_training"]
        for name in DYNAMIC_OPTIONS:
            if fields[name] is None:
                del fields[name]
        canonical = json.dumps({"version": CONFIG_VERSION, **fields}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def _typed_values(self) -> dict[str, Any]:
        """Field values with numbers in their field's type, so that equal configs (lr=1 and lr=1.0, as a
        JSON round trip or a hand-written dict produces) get the same key."""
        values = self.to_dict()
        for f in dataclasses.fields(self):
            value = values[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            base, _ = _base_type(f.type)
            if base is float:
                values[f.name] = float(value)
            elif base is int and float(value).is_integer():
                values[f.name] = int(value)
        return values

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def validate(self) -> RunConfig:
        """Raise a ValueError naming the first bad field and what to do; return self when all are valid."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            base, optional = _base_type(f.type)
            if value is None:
                if optional:
                    continue
                raise ValueError(f"{f.name} must be set")
            if base is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be true or false, got {value!r}")
                continue
            if base in (int, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                        base is int and not float(value).is_integer()):
                    raise ValueError(f"{f.name} must be {'an integer' if base is int else 'a number'}, got {value!r}")
                if not math.isfinite(value):  # NaN passes every comparison below
                    raise ValueError(f"{f.name} must be a finite number, got {value!r}")
                if meta["minimum"] is not None and value < meta["minimum"]:
                    raise ValueError(f"{f.name} must be >= {meta['minimum']}, got {value}")
                if meta["maximum"] is not None and value > meta["maximum"]:
                    raise ValueError(f"{f.name} must be <= {meta['maximum']}, got {value}")
                if meta["below"] is not None and value >= meta["below"]:
                    raise ValueError(f"{f.name} must be below {meta['below']}, got {value}")
                if meta["above"] is not None and value <= meta["above"]:
                    raise ValueError(f"{f.name} must be above {meta['above']}, got {value}")
            choices = field_choices(f.name)
            if choices is not None and value not in choices:
                raise ValueError(f"unknown {f.name} {value!r}; choose one of: {', '.join(choices)}")
        if self.method == DENSE and self.sparsity != 0:
            raise ValueError(f"method 'dense' means no pruning, so sparsity must be 0 (got {self.sparsity}); "
                             "choose a pruning method for a sparse run")
        return self

    # ---- command line --------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
        """One flag per field (`--prune-batches`), with the field's help, type, choices and default."""
        for f in dataclasses.fields(cls):
            if f.name in exclude:
                continue
            flag = "--" + f.name.replace("_", "-")
            base, _ = _base_type(f.type)
            help_ = f.metadata["help"].replace("%", "%%")  # argparse %-formats help: "99% removed" broke --help
            if base is bool:
                parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                    help=help_)
                continue
            choices = field_choices(f.name)
            parser.add_argument(flag, dest=f.name, type=base, default=f.default, choices=choices,
                                metavar=_metavar(f.name, choices), help=f"{help_} (default: {f.default})")

    @classmethod
    def from_args(cls, namespace: argparse.Namespace, **overrides: Any) -> RunConfig:
        values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}
        values.update(overrides)
        return cls(**values)


@functools.cache
def _base_type(annotation: Any) -> tuple[type, bool]:
    """(int, True) for 'int | None'; annotations are strings under `from __future__ import annotations`."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {}, {})  # only our own field annotations reach here
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _metavar(name: str, choices: Sequence[str] | None) -> str | None:
    if choices is None:
        return None
    return "{" + ",".join(choices) + "}" if len(choices) <= 8 else name.upper()


def config_field(name: str) -> dataclasses.Field:
    for f in dataclasses.fields(RunConfig):
        if f.name == name:
            return f
    raise ValueError(f"RunConfig has no field {name!r}")


def field_type(name: str) -> tuple[type, bool]:
    """(int, True) for a field annotated 'int | None': its value type and whether it may be empty."""
    return _base_type(config_field(name).type)


def field_choices(name: str) -> list[str] | None:
    choices = config_field(name).metadata["choices"]
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def help_text(name: str) -> str:
    """The help text of a config field, for widgets' `help=` and documentation."""
    return config_field(name).metadata["help"]


def field_label(name: str) -> str:
    return config_field(name).metadata["label"] or name.replace("_", " ").capitalize()


METHOD_OPTION_FIELDS = tuple(f for f in dataclasses.fields(RunConfig) if f.metadata["method"] is not None)
# The training settings, in field order: pc.train's keyword arguments, and what IMP and GemMiner train with.
TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["group"] == TRAINING)
# Dynamic sparse training: the mode and its knobs (pc.train's keyword arguments of the same names).
DYNAMIC_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["group"] == DYNAMIC)
DYNAMIC_OPTIONS = tuple(name for name in DYNAMIC_FIELDS if name != "sparse_training")


def training_settings(config: RunConfig) -> dict[str, Any]:
    """The configuration's training settings that are set (unset ones take the dataset's defaults)."""
    return {name: getattr(config, name) for name in TRAINING_FIELDS if getattr(config, name) is not None}


def sparse_training_settings(config: RunConfig) -> dict[str, Any]:
    """pc.train's dynamic-sparse-training arguments of the configuration (empty for a static run)."""
    config = config.canonical()
    if config.sparse_training == STATIC:
        return {}
    return {name: getattr(config, name) for name in DYNAMIC_FIELDS if getattr(config, name) is not None}


def method_options(config: RunConfig) -> dict[str, Any]:
    """pc.prune's options for the configuration's method from its method-option fields that are set."""
    return {f.metadata["option"] or f.name: getattr(config, f.name) for f in METHOD_OPTION_FIELDS
            if f.metadata["method"] == config.method and getattr(config, f.name) is not None}


def option_fields(method: str) -> list[str]:
    """Names of the method-option fields of one method (e.g. IMP's prune_fraction and rewind_step)."""
    return [f.name for f in METHOD_OPTION_FIELDS if f.metadata["method"] == method]
