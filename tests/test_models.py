"""Tests of pruning_core.engine.models: the model registry and its builders."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pruning_core as pc
from pruning_core.engine.models import kaiming_init


@pytest.mark.parametrize("name", list(pc.MODELS))
def test_every_registered_model_builds_and_maps_a_batch_to_class_scores(name):
    spec = pc.MODELS[name]
    assert spec.name == name and spec.label and spec.description
    for shape in ((3, 32, 32), (1, 8, 8)):
        torch.manual_seed(0)
        model = spec(shape, 10)
        assert isinstance(model, nn.Module)
        assert pc.prunable_weights(model), f"{name} has nothing to prune"
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(2, *shape))
        assert out.shape == (2, 10), f"{name} on {shape}"
        assert torch.isfinite(out).all()


def test_unknown_model_lists_the_registered_names():
    with pytest.raises(ValueError) as info:
        pc.MODELS["nope"]
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("unknown model 'nope'; choose one of: ")
    for name in pc.MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize("shape, classes, message", [
    ((32, 32), 10, "input_shape must be (channels, height, width)"),
    ((3, 0, 32), 10, "input_shape must be (channels, height, width)"),
    ((3, 32, 32), 1, "num_classes must be at least 2"),
])
def test_builders_reject_bad_shapes(shape, classes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pc.MODELS["mlp"](shape, classes)


def test_mlp_layout_names_and_options():
    model = pc.MODELS["mlp"]((2, 3, 3), 4, width=5, depth=3)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert [n for n, _ in linears] == ["fc1", "fc2", "fc3", "out"]
    assert [tuple(m.weight.shape) for _, m in linears] == [(5, 18), (5, 5), (5, 5), (4, 5)]
    assert all(m.bias is not None for _, m in linears)

    plain = pc.MODELS["mlp"]((2, 3, 3), 4, width=5, depth=2, bias=False)
    assert all(m.bias is None for m in plain.modules() if isinstance(m, nn.Linear))
    assert [n for n, _ in plain.named_parameters()] == ["fc1.weight", "fc2.weight", "out.weight"]

    bn = pc.MODELS["mlp"]((2, 3, 3), 4, width=5, depth=2, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in bn.modules()) == 2

    linear_only = pc.MODELS["mlp"]((2, 3, 3), 4, depth=0)
    assert [tuple(w.shape) for _, _, w in pc.prunable_weights(linear_only)] == [(4, 18)]

    with pytest.raises(ValueError, match="mlp needs depth >= 0 and width >= 1"):
        pc.MODELS["mlp"]((2, 3, 3), 4, depth=-1)


def test_kaiming_init_scales_weights_by_fan_in_and_zeroes_biases():
    torch.manual_seed(0)
    model = pc.MODELS["mlp"]((3, 32, 32), 10, width=200, depth=2)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            fan_in = module.weight.shape[1]
            expected = math.sqrt(2.0 / fan_in)
            # Kaiming-normal, fan-in mode, ReLU gain: std sqrt(2 / fan_in).
            assert float(module.weight.detach().std()) == pytest.approx(expected, rel=0.1), name
            assert abs(float(module.weight.detach().mean())) < 0.2 * expected
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    torch.manual_seed(0)
    conv = pc.MODELS["vgg11_bn"]((3, 16, 16), 10, width_divisor=4)
    for module in conv.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            assert float(module.weight.detach().std()) == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.25)


def test_kaiming_init_returns_the_model_it_initialised():
    layer = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        layer[0].bias.fill_(5.0)
    assert kaiming_init(layer) is layer
    assert torch.equal(layer[0].bias, torch.zeros(2))


def test_same_seed_builds_the_same_weights():
    torch.manual_seed(7)
    a = pc.MODELS["conv"]((1, 8, 8), 10, width=4)
    torch.manual_seed(7)
    b = pc.MODELS["conv"]((1, 8, 8), 10, width=4)
    torch.manual_seed(8)
    c = pc.MODELS["conv"]((1, 8, 8), 10, width=4)
    for (name, pa), pb, pcc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_vgg_plain_and_batch_norm_variants_and_width_divisor():
    plain = pc.MODELS["vgg16"]((3, 32, 32), 10, width_divisor=8)
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())

    bn = pc.MODELS["vgg16_bn"]((3, 32, 32), 10, width_divisor=8)
    assert all(c.bias is None for c in bn.modules() if isinstance(c, nn.Conv2d))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 13
    assert len([m for m in pc.MODELS["vgg19"]((3, 32, 32), 10, width_divisor=16).modules()
                if isinstance(m, nn.Conv2d)]) == 16


def test_pooling_stops_at_one_pixel_so_small_images_fit():
    # 8x8 digits: three 2x2 pools reach 1x1; the last two of VGG's five are skipped.
    small = pc.MODELS["vgg11"]((1, 8, 8), 10, width_divisor=8)
    assert sum(isinstance(m, nn.MaxPool2d) for m in small.modules()) == 3
    large = pc.MODELS["vgg11"]((3, 32, 32), 10, width_divisor=8)
    assert sum(isinstance(m, nn.MaxPool2d) for m in large.modules()) == 5
    # A 2x2 image still gives class scores.
    with torch.no_grad():
        assert pc.MODELS["vgg11"]((3, 2, 2), 10, width_divisor=8).eval()(torch.randn(2, 3, 2, 2)).shape == (2, 10)


def test_resnet_blocks_and_1x1_shortcuts():
    model = pc.MODELS["resnet20"]((3, 32, 32), 10)
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 9  # (20 - 2) / 6 = 3 blocks in each of 3 stages
    shortcuts = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    # Only the first block of stages 2 and 3 changes shape (16 -> 32 -> 64 channels, stride 2).
    assert shortcuts == ["blocks.3.shortcut.0", "blocks.6.shortcut.0"]
    assert len([m for m in pc.MODELS["resnet56"]((3, 8, 8), 10).modules()
                if type(m).__name__ == "BasicBlock"]) == 27
