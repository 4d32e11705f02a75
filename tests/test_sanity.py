"""Sanity checks (Frankle et al. 2021): the transforms of pc.prune, the comparison table, and its sentence."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import pruning_core as pc


@pytest.fixture(scope="module")
def digits():
    return pc.load_dataset("digits")


def pruned(digits, method="snip", sparsity=0.9, **kwargs):
    torch.manual_seed(0)
    model = pc.MODELS["conv"](digits.input_shape, 10, width=8)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = pc.prune(model, method, sparsity, digits, seed=0, **kwargs)
    return model, initial, result


def per_layer(masks):
    return {name: int(mask.sum()) for name, mask in masks.items()}


def test_shuffle_keeps_each_layers_count_and_changes_only_which_weights(digits):
    _, _, plain = pruned(digits)
    model, initial, shuffled = pruned(digits, shuffle=True)
    assert per_layer(shuffled.masks) == per_layer(plain.masks)
    for name in plain.masks:
        assert not torch.equal(shuffled.masks[name], plain.masks[name]), f"{name} was not shuffled"
    for name, value in initial.items():          # the initial weights, now under the shuffled mask
        expected = value * shuffled.masks[name] if name in shuffled.masks else value
        assert torch.equal(model.state_dict()[name], expected), name


def test_reinit_keeps_the_mask_and_redraws_only_the_weights(digits):
    _, _, plain = pruned(digits)
    model, initial, reinit = pruned(digits, reinit=True)
    assert all(torch.equal(reinit.masks[n], plain.masks[n]) for n in plain.masks)
    after = model.state_dict()
    for name, value in initial.items():
        if name in reinit.masks:
            mask = reinit.masks[name]
            assert not after[name][~mask].any()
            assert not torch.equal(after[name][mask], value[mask]), f"{name} was not reinitialised"
            assert float(after[name][mask].std()) == pytest.approx(float(value.std()), rel=0.25)
        else:
            assert torch.equal(after[name], value), name   # biases, BatchNorm: untouched


def test_invert_keeps_the_count_and_the_lowest_scores(digits):
    _, _, plain = pruned(digits, iterations=1)
    _, _, inverted = pruned(digits, iterations=1, invert=True)
    assert sum(per_layer(inverted.masks).values()) == sum(per_layer(plain.masks).values())
    kept = torch.cat([inverted.scores[n][inverted.masks[n]] for n in inverted.masks])
    removed = torch.cat([inverted.scores[n][~inverted.masks[n]] for n in inverted.masks])
    assert kept.max() <= removed.min()
    # With a per-layer scope, inverting keeps every layer's density as well.
    _, _, plain_layerwise = pruned(digits, iterations=1, scope="layerwise")
    _, _, inverted_layerwise = pruned(digits, iterations=1, scope="layerwise", invert=True)
    assert per_layer(inverted_layerwise.masks) == per_layer(plain_layerwise.masks)


def test_sanity_checks_train_every_variant_and_reuse_stored_runs(tmp_path):
    with pc.Store(tmp_path / "runs.db") as store:
        messages = []
        table = pc.sanity_checks(store=store, method="magnitude", sparsity=0.9, model="mlp", epochs=1,
                                 device="cpu", on_progress=lambda m, d, t: messages.append((m, d, t)))
        assert table["variant"].tolist() == ["none", "shuffle", "reinit", "invert"]
        assert table["test_accuracy"].between(0, 1).all()
        assert table.loc[table["variant"] == "none", "change"].item() == 0.0
        assert table["density"].round(6).nunique() == 1
        assert not table["reused"].any() and table["run_id"].notna().all()
        assert messages and all(0 <= d <= t == 4 for _, d, t in messages)
        again = pc.sanity_checks(pc.RunConfig(method="magnitude", sparsity=0.9, model="mlp", epochs=1), store,
                                 variants=("none", "shuffle"), device="cpu")
        assert again["reused"].all()
        assert again["test_accuracy"].tolist() == table["test_accuracy"].tolist()[:2]
    sentence = pc.explain_sanity(table)
    assert "magnitude" in sentence and "Shuffling" in sentence


def test_sanity_checks_reject_bad_input():
    with pytest.raises(ValueError, match="unknown sanity check"):
        pc.sanity_checks(method="magnitude", model="mlp", epochs=0, variants=("none", "flip"))
    with pytest.raises(ValueError, match="sparsity above 0"):
        pc.sanity_checks(method="magnitude", sparsity=0.0, model="mlp", epochs=0)


def table_of(**accuracy) -> pd.DataFrame:
    table = pd.DataFrame({"variant": list(accuracy), "test_accuracy": list(accuracy.values())})
    table.attrs.update(method="snip", num_classes=10)
    return table


def test_explanation_says_what_the_result_means():
    layer_densities_only = pc.explain_sanity(table_of(none=0.90, shuffle=0.905, reinit=0.895, invert=0.70))
    assert "only in how many weights it keeps in each layer" in layer_densities_only
    assert "does not depend on the particular initial values" in layer_densities_only
    assert "scores do rank the weights usefully" in layer_densities_only

    ticket = pc.explain_sanity(table_of(none=0.90, shuffle=0.80, reinit=0.75))
    assert "chose specific weights that matter" in ticket and "as a lottery ticket does" in ticket
    assert "inverted" not in ticket.lower() and "lowest-scored" not in ticket

    useless_scores = pc.explain_sanity(table_of(none=0.90, invert=0.91))
    assert "do not rank the weights usefully" in useless_scores

    assert "chance" in pc.explain_sanity(table_of(none=0.105, shuffle=0.10))
    assert "not trained" in pc.explain_sanity(table_of(shuffle=0.5))
