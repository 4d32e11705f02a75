"""Tests of pruning_core.config: RunConfig's key, validation, command line and help texts."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json

import pytest

import pruning_core as pc
from pruning_core.config import (
    CONFIG_VERSION,
    DENSE,
    DYNAMIC_FIELDS,
    DYNAMIC_OPTIONS,
    TRAINING_FIELDS,
    RunConfig,
    config_field,
    field_choices,
    help_text,
    method_options,
    option_fields,
    sparse_training_settings,
    training_settings,
)
from pruning_core.engine.settings import TRAIN_DEFAULT_KEYS, TrainSettings

FIELD_NAMES = [f.name for f in dataclasses.fields(RunConfig)]

# One valid value different from the default for every field (a pruned, non-dense config).
CHANGED = {
    "dataset": "synthetic",
    "model": "mlp",
    "method": "magnitude",
    "sparsity": 0.5,
    "schedule": "linear",
    "iterations": 7,
    "scope": "layerwise",
    "sanity": "shuffle",
    "sparse_init": True,
    "epochs": 3,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.05,
    "lr_schedule": "cosine",
    "weight_decay": 1e-4,
    "label_smoothing": 0.1,
    "sparse_training": "rigl",
    "update_every": 10,
    "drop_fraction": 0.5,
    "update_until": 0.5,
    "prune_batches": 2,
    "prune_fraction": 0.3,
    "rewind_step": 20,
    "score_lr": 0.1,
    "regularization": 1e-3,
    "gemminer_init": "signed_constant",
    "seed": 1,
}


def test_changed_values_cover_every_field_and_are_valid():
    # A new field must get an entry here, so the key test below covers it too.
    assert set(CHANGED) == set(FIELD_NAMES)
    base = RunConfig()
    for name, value in CHANGED.items():
        assert getattr(base, name) != value
        base.replace(**{name: value}).validate()


# ---- key -----------------------------------------------------------------------------------------
def test_key_is_stable_for_equal_configs():
    a = RunConfig(method="snip", sparsity=0.99, seed=3)
    b = RunConfig(seed=3, sparsity=0.99, method="snip")
    assert a == b and a is not b
    assert a.key() == b.key()
    assert len(a.key()) == 16 and int(a.key(), 16) >= 0
    # The same key after a round trip through the run store's JSON.
    assert RunConfig.from_dict(json.loads(json.dumps(a.to_dict()))).key() == a.key()


def test_key_does_not_depend_on_int_or_float_spelling_of_a_number():
    # RunConfig(lr=1) == RunConfig(lr=1.0) as dataclasses, so they must name the same result.
    assert RunConfig(lr=1) == RunConfig(lr=1.0)
    assert RunConfig(lr=1).key() == RunConfig(lr=1.0).key()
    assert RunConfig(sparsity=0.5, weight_decay=0).key() == RunConfig(sparsity=0.5, weight_decay=0.0).key()
    assert RunConfig(iterations=5.0).key() == RunConfig(iterations=5).key()


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_key_changes_when_any_field_changes(name):
    method = config_field(name).metadata["method"]   # a method's option changes the key of that method's runs
    base = RunConfig(method=method) if method else RunConfig()
    if name in DYNAMIC_OPTIONS:                       # SET / RigL's knobs change the key of SET / RigL runs
        base = base.replace(sparse_training="set")
    changed = base.replace(**{name: CHANGED[name]})
    assert changed.key() != base.key()


def test_unpruned_configs_share_one_dense_key():
    # Sparsity 0 ignores every pruning field: one computation, one key.
    dense = RunConfig(method=DENSE, sparsity=0.0)
    assert RunConfig(method="synflow", sparsity=0.0, iterations=100).key() == dense.key()
    assert RunConfig(method="snip", sparsity=0, scope="layerwise", sanity="invert").key() == dense.key()
    # ...but not the training fields.
    assert RunConfig(method=DENSE, sparsity=0.0, epochs=3).key() != dense.key()
    assert dense.is_dense and not RunConfig().is_dense


def test_method_options_belong_to_their_method_only():
    # IMP's prune_fraction on a SynFlow run changes nothing, so it must not make a second result.
    assert RunConfig(method="synflow", prune_fraction=0.5).key() == RunConfig(method="synflow").key()
    assert RunConfig(method="synflow", prune_fraction=0.5).canonical().prune_fraction is None
    assert RunConfig(method="imp", prune_fraction=0.5).key() != RunConfig(method="imp").key()
    assert RunConfig(method="imp", sparsity=0, rewind_step=3).key() == RunConfig(method=DENSE, sparsity=0).key()
    assert option_fields("imp") == ["prune_fraction", "rewind_step"]
    assert option_fields("gemminer") == ["score_lr", "regularization", "gemminer_init"]


def test_unset_method_options_leave_the_key_as_it_was_before_they_existed():
    # The key is the hash of the fields without the (unset) method options, as it was before they were added.
    config = RunConfig(method="imp", sparsity=0.8, seed=2)
    values = config._typed_values()
    for name in option_fields("imp") + option_fields("gemminer") + list(DYNAMIC_FIELDS):
        del values[name]
    expected = hashlib.sha256(json.dumps({"version": CONFIG_VERSION, **values}, sort_keys=True,
                                         separators=(",", ":")).encode()).hexdigest()[:16]
    assert config.key() == expected


def test_static_training_keeps_the_key_it_had_before_dynamic_sparse_training_existed():
    # The key of a static run is the hash of the fields without the four sparse-training fields, as before.
    for config in (RunConfig(), RunConfig(method="snip", sparsity=0.9, lr=0.1), RunConfig(sparse_training="static")):
        values = config._typed_values()
        for name in option_fields("imp") + option_fields("gemminer") + list(DYNAMIC_FIELDS):
            del values[name]
        expected = hashlib.sha256(json.dumps({"version": CONFIG_VERSION, **values}, sort_keys=True,
                                             separators=(",", ":")).encode()).hexdigest()[:16]
        assert config.key() == expected
    # A knob of SET / RigL on a static run changes nothing, so it makes no second result; nor does a dense run.
    assert RunConfig(update_every=5, drop_fraction=0.1).key() == RunConfig().key()
    assert RunConfig(update_every=5).canonical().update_every is None
    assert RunConfig(sparsity=0, sparse_training="rigl").key() == RunConfig(method=DENSE, sparsity=0).key()
    assert RunConfig(sparse_training="set").key() != RunConfig(sparse_training="rigl").key()
    assert RunConfig(sparse_training="rigl", update_every=100).key() != RunConfig(sparse_training="rigl").key()


def test_sparse_training_fields_reach_pc_train_only_when_dynamic():
    train_keywords = set(inspect.signature(pc.train).parameters)
    assert set(DYNAMIC_FIELDS) <= train_keywords
    assert not set(DYNAMIC_FIELDS) & set(TRAINING_FIELDS)
    assert sparse_training_settings(RunConfig(update_every=5)) == {}
    assert sparse_training_settings(RunConfig(sparse_training="rigl", update_every=5)) == {
        "sparse_training": "rigl", "update_every": 5}
    with pytest.raises(ValueError, match="drop_fraction must be <= 1"):
        RunConfig(sparse_training="set", drop_fraction=1.5).validate()
    with pytest.raises(ValueError, match="unknown sparse_training 'deep_r'"):
        RunConfig(sparse_training="deep_r").validate()


def test_method_options_reach_the_method_under_its_option_names():
    config = RunConfig(method="gemminer", score_lr=0.5, gemminer_init="signed_constant", prune_fraction=0.2)
    assert method_options(config) == {"score_lr": 0.5, "init": "signed_constant"}
    assert method_options(RunConfig(method="imp", rewind_step=0)) == {"rewind_step": 0}
    assert method_options(RunConfig(method="snip")) == {}


def test_training_fields_are_the_settings_pc_train_and_the_datasets_know():
    train_keywords = set(inspect.signature(pc.train).parameters)
    assert set(TRAINING_FIELDS) <= train_keywords
    assert set(TRAINING_FIELDS) == set(TRAIN_DEFAULT_KEYS)
    assert set(pc.DATASETS['digits'].train_defaults) == set(TRAIN_DEFAULT_KEYS)
    assert set(TRAINING_FIELDS) == {f.name for f in dataclasses.fields(TrainSettings) if f.name != "momentum"}
    assert training_settings(RunConfig(epochs=3, lr=0.1)) == {"epochs": 3, "lr": 0.1}


def test_a_method_option_is_a_command_line_flag_with_its_range():
    parser = parser_for()
    assert parser.parse_args(["--prune-fraction", "0.2"]).prune_fraction == 0.2
    with pytest.raises(ValueError, match="prune_fraction must be above 0"):
        RunConfig(method="imp", prune_fraction=0.0).validate()
    with pytest.raises(ValueError, match="unknown gemminer_init 'zeros'"):
        RunConfig(method="gemminer", gemminer_init="zeros").validate()


# ---- validate --------------------------------------------------------------------------------------
def test_seeds_are_limited_to_what_sqlite_and_every_rng_take():
    assert RunConfig(seed=2**31 - 1).validate().seed == 2**31 - 1
    for seed in (2**31, 2**63, -1):
        with pytest.raises(ValueError, match="seed must be <= 2147483647|seed must be >= 0"):
            RunConfig(seed=seed).validate()


def test_validate_returns_the_config_when_valid():
    config = RunConfig(**CHANGED)
    assert config.validate() is config
    assert RunConfig(method=DENSE, sparsity=0.0).validate().is_dense


@pytest.mark.parametrize("changes, message", [
    ({"sparsity": 1.0}, "sparsity must be below 1.0"),
    ({"sparsity": -0.1}, "sparsity must be >= 0.0"),
    ({"sparsity": float("nan")}, "sparsity must be a finite number"),
    ({"sparsity": True}, "sparsity must be a number"),
    ({"sparsity": "0.9"}, "sparsity must be a number"),
    ({"lr": float("inf")}, "lr must be a finite number"),
    ({"iterations": 0}, "iterations must be >= 1"),
    ({"iterations": 2.5}, "iterations must be an integer"),
    ({"epochs": -1}, "epochs must be >= 0"),
    ({"label_smoothing": 1.0}, "label_smoothing must be below 1.0"),
    ({"sparse_init": "yes"}, "sparse_init must be true or false"),
    ({"seed": None}, "seed must be set"),
    ({"schedule": "cosine"}, "unknown schedule 'cosine'; choose one of: exponential, linear"),
    ({"scope": "local"}, "unknown scope 'local'; choose one of: global, layerwise"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; choose one of: sgd, adam"),
    ({"method": DENSE, "sparsity": 0.5}, "method 'dense' means no pruning"),
])
def test_validate_names_the_bad_field(changes, message):
    with pytest.raises(ValueError) as info:
        RunConfig(**changes).validate()
    assert message in str(info.value)


@pytest.mark.parametrize("field, registry", [("method", "METHODS"), ("model", "MODELS"), ("dataset", "DATASETS")])
def test_unknown_registry_name_lists_the_registered_names(field, registry):
    with pytest.raises(ValueError) as info:
        RunConfig(**{field: "nope"}).validate()
    message = str(info.value)
    assert f"unknown {field} 'nope'" in message
    for name in getattr(pc, registry):
        assert name in message


def test_field_choices_follow_the_registries():
    assert field_choices("model") == list(pc.MODELS)
    assert field_choices("dataset") == list(pc.DATASETS)
    assert field_choices("method") == [*pc.METHODS, DENSE]
    assert field_choices("sparsity") is None


def test_from_dict_rejects_unknown_fields_and_fills_defaults():
    with pytest.raises(ValueError, match="unknown config field.*sparsty"):
        RunConfig.from_dict({"sparsty": 0.5})
    assert RunConfig.from_dict({"seed": 4}) == RunConfig(seed=4)


# ---- command line -----------------------------------------------------------------------------------
def parser_for(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prune", exit_on_error=True)
    RunConfig.add_arguments(parser, **kwargs)
    return parser


def argv_for(config: RunConfig) -> list[str]:
    argv = []
    for name, value in config.to_dict().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def test_command_line_defaults_are_the_config_defaults():
    assert RunConfig.from_args(parser_for().parse_args([])) == RunConfig()


@pytest.mark.parametrize("config", [RunConfig(**CHANGED), RunConfig(sparse_init=False, method="grasp", seed=9)])
def test_command_line_round_trip(config):
    namespace = parser_for().parse_args(argv_for(config))
    assert RunConfig.from_args(namespace) == config


def test_boolean_flags_cannot_fall_into_the_type_bool_trap():
    parser = parser_for()
    assert parser.parse_args(["--sparse-init"]).sparse_init is True
    assert parser.parse_args(["--no-sparse-init"]).sparse_init is False
    assert parser.parse_args(["--sparse-init", "--no-sparse-init"]).sparse_init is False
    # With type=bool, "--sparse-init False" would parse as True; here a value is not accepted at all.
    with pytest.raises(SystemExit):
        parser.parse_args(["--sparse-init", "False"])


def test_command_line_types_and_choices_are_enforced():
    parser = parser_for()
    args = parser.parse_args(["--sparsity", "0.99", "--iterations", "20", "--prune-batches", "3"])
    assert args.sparsity == 0.99 and args.iterations == 20 and args.prune_batches == 3
    assert isinstance(args.iterations, int)
    for argv in (["--method", "nope"], ["--iterations", "2.5"], ["--schedule", "cosine"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def test_from_args_overrides_and_excluded_flags():
    parser = parser_for(exclude=("seed", "dataset"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--seed", "3"])
    config = RunConfig.from_args(parser.parse_args(["--method", "snip"]), seed=5)
    assert config == RunConfig(method="snip", seed=5)


def test_help_output_shows_each_fields_text_verbatim():
    text = " ".join(parser_for().format_help().split())  # undo argparse's line wrapping
    # A '%' in a help text must not be taken for a format directive ('99% removed').
    assert text.count("(0.99 = 99% removed = compression 10^2)") == 1
    assert "option_strings" not in text  # what '% r' in '99% removed' pulled into the text
    assert "--prune-batches" in text and "--no-sparse-init" in text


def test_help_text_returns_the_fields_help():
    assert help_text("sparsity").startswith("Fraction of prunable weights removed")
    assert help_text("iterations") == dataclasses.fields(RunConfig)[FIELD_NAMES.index("iterations")].metadata["help"]
    for name in FIELD_NAMES:
        assert help_text(name).strip()
    with pytest.raises(ValueError, match="RunConfig has no field 'nope'"):
        help_text("nope")
