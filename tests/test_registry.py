"""Tests of pruning_core.registry: the one registry class behind methods, models and datasets."""

from __future__ import annotations

import pytest

import pruning_core as pc
from pruning_core.registry import Registry, UnknownNameError


def make_registry() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)
    reg.register("green", 2)
    reg.register("blue", 3)
    return reg


def test_unknown_name_error_is_a_key_error_and_a_value_error():
    assert issubclass(UnknownNameError, KeyError)
    assert issubclass(UnknownNameError, ValueError)
    reg = make_registry()
    with pytest.raises(KeyError):
        reg["purple"]
    with pytest.raises(ValueError):
        reg["purple"]


def test_unknown_name_message_names_the_concept_and_lists_every_valid_name_unquoted():
    reg = make_registry()
    with pytest.raises(UnknownNameError) as info:
        reg["purple"]
    message = str(info.value)
    assert message == "unknown colour 'purple'; choose one of: red, green, blue"
    # KeyError would normally print repr(message) with surrounding quotes.
    assert not message.startswith(("'", '"'))


def test_unhashable_name_raises_unknown_name_error_not_type_error():
    reg = make_registry()
    with pytest.raises(UnknownNameError, match="choose one of: red, green, blue"):
        reg[["red"]]  # type: ignore[index]


def test_mapping_behaviour_in_registration_order():
    reg = make_registry()
    assert list(reg) == ["red", "green", "blue"]
    assert len(reg) == 3
    assert reg["green"] == 2
    assert "blue" in reg and "purple" not in reg
    assert reg.get("purple") is None and reg.get("purple", 0) == 0
    assert dict(reg.items()) == {"red": 1, "green": 2, "blue": 3}
    assert "red" in repr(reg) and "colour" in repr(reg)


def test_registering_a_name_twice_is_an_error_and_keeps_the_first_entry():
    reg = make_registry()
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        reg.register("red", 10)
    assert reg["red"] == 1


def test_decorator_registers_the_made_entry_and_returns_the_function_unchanged():
    reg: Registry[tuple[str, object]] = Registry("thing")

    @reg.decorator("double", lambda fn: ("entry", fn))
    def double(x):
        return 2 * x

    assert double(4) == 8  # still the plain function
    assert reg["double"] == ("entry", double)


@pytest.mark.parametrize("registry, concept", [(pc.METHODS, "method"), (pc.MODELS, "model")])
def test_package_registries_raise_unknown_name_error_listing_their_names(registry, concept):
    with pytest.raises(UnknownNameError) as info:
        registry["nope"]
    message = str(info.value)
    assert message.startswith(f"unknown {concept} 'nope'")
    for name in registry:
        assert name in message
