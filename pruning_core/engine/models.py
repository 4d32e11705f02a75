"""Model registry: the architectures of the SynFlow paper's experiments, in plain torch layers.

Every builder is called as `MODELS[name](input_shape, num_classes)` with `input_shape = (C, H, W)`,
returns a freshly initialised `nn.Module` (Kaiming-normal weights, zero biases) and adapts to the
input size: pooling stops once the feature map is 1x1, so even the 8x8 `digits` images fit every model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pruning_core.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    label: str
    description: str
    builder: Callable[..., nn.Module]

    def __call__(self, input_shape: Sequence[int], num_classes: int, *, seed: int | None = None,
                 **options) -> nn.Module:
        """Build the model. With `seed`, the initial weights come from a private generator seeded with it, so
        the same seed gives the same weights whatever other threads do with torch's global generator."""
        input_shape = _check_shape(input_shape, num_classes)
        model = self.builder(input_shape, num_classes, **options)
        if seed is not None:
            kaiming_init(model, torch.Generator().manual_seed(int(seed)))
        return model


MODELS: Registry[ModelSpec] = Registry("model")


def _check_shape(input_shape: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width) with positive sizes, got {tuple(input_shape)}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return shape  # type: ignore[return-value]


def kaiming_init(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Kaiming-normal (fan-in, ReLU gain) weights, zero biases, BatchNorm at identity."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


# ---- multilayer perceptron -----------------------------------------------------------------
def mlp(input_shape, num_classes, width: int = 100, depth: int = 4, batch_norm: bool = False,
        bias: bool = True) -> nn.Module:
    """`depth` hidden layers of `width` ReLU units (the SynFlow paper's fully connected net).
    Layers are named fc1..fcN and `out`, so tables read 'fc2.weight', not '3.weight'."""
    if depth < 0 or width < 1:
        raise ValueError(f"mlp needs depth >= 0 and width >= 1, got depth={depth}, width={width}")
    c, h, w = input_shape
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    fan_in = c * h * w
    for i in range(1, depth + 1):
        layers.append((f"fc{i}", nn.Linear(fan_in, width, bias=bias)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm1d(width)))
        layers.append((f"relu{i}", nn.ReLU(inplace=True)))
        fan_in = width
    layers.append(("out", nn.Linear(fan_in, num_classes, bias=bias)))
    return kaiming_init(nn.Sequential(OrderedDict(layers)))


# ---- small CNN -------------------------------------------------------------------------------
def conv(input_shape, num_classes, width: int = 32, batch_norm: bool = True) -> nn.Module:
    """Three 3x3 conv blocks (width, 2x, 4x channels) then a linear classifier; trains on digits in seconds."""
    c, h, w = input_shape
    layers: list[tuple[str, nn.Module]] = []
    channels = c
    size = min(h, w)
    for i, out in enumerate((width, 2 * width, 4 * width), start=1):
        layers.append((f"conv{i}", nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm2d(out)))
        layers.append((f"relu{i}", nn.ReLU(inplace=True)))
        if i < 3 and size >= 2:
            layers.append((f"pool{i}", nn.MaxPool2d(2)))
            size //= 2
        channels = out
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(channels, num_classes))]
    return kaiming_init(nn.Sequential(OrderedDict(layers)))


# ---- VGG -------------------------------------------------------------------------------------
VGG_PLANS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """CIFAR-style VGG: 3x3 conv stacks, max-pooling, global average pool, one linear classifier."""

    def __init__(self, input_shape, num_classes, depth: int, batch_norm: bool, width_divisor: int = 1):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        channels, size = c, min(h, w)
        for item in VGG_PLANS[depth]:
            if item == "M":
                # Small inputs (8x8 digits) run out of resolution before the five pools of CIFAR VGG.
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            out = max(1, item // width_divisor)
            layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# ---- ResNets ---------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut; a 1x1 conv shortcut where the shape changes (prunable, and
    often the first layer to collapse)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, stages of BasicBlocks (stride 2 between stages while the map is larger than 1x1),
    global average pool, linear classifier."""

    def __init__(self, input_shape, num_classes, stage_widths: Sequence[int], blocks_per_stage: int):
        super().__init__()
        c, h, w = input_shape
        self.stem = nn.Sequential(nn.Conv2d(c, stage_widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(stage_widths[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        channels, size = stage_widths[0], min(h, w)
        for i, width in enumerate(stage_widths):
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0 and size >= 2) else 1
                size = (size + 1) // 2 if stride == 2 else size
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _register(name: str, label: str, description: str, builder: Callable[..., nn.Module]) -> None:
    MODELS.register(name, ModelSpec(name, label, description, builder))


_register("mlp", "MLP", "Fully connected ReLU network (4 hidden layers of 100 units by default).", mlp)
_register("conv", "Small CNN", "Three 3x3 conv layers with BatchNorm and a linear classifier (~94k weights): "
          "the fast default for the digits dataset.", conv)
for _depth in (11, 13, 16, 19):
    for _bn in (False, True):
        _name = f"vgg{_depth}" + ("_bn" if _bn else "")
        _register(
            _name, f"VGG-{_depth}" + ("-BN" if _bn else ""),
            f"CIFAR-style VGG-{_depth}" + (" with BatchNorm" if _bn else " without BatchNorm (deep and plain: "
                                             "the classic layer-collapse case)") + ".",
            lambda shape, classes, _d=_depth, _b=_bn, **kw: VGG(shape, classes, _d, _b, **kw))
for _depth in (20, 32, 56):
    _register(f"resnet{_depth}", f"ResNet-{_depth}",
              f"CIFAR ResNet-{_depth} (16/32/64 channels, {(_depth - 2) // 6} blocks per stage, 1x1 conv shortcuts).",
              lambda shape, classes, _d=_depth, **kw: ResNet(shape, classes, (16, 32, 64), (_d - 2) // 6, **kw))
_register("resnet18", "ResNet-18", "ResNet-18 (64-512 channels, 2 blocks per stage) with a 3x3 stem for small "
          "images, as used for Tiny ImageNet.",
          lambda shape, classes, **kw: ResNet(shape, classes, (64, 128, 256, 512), 2, **kw))
_register("wide_resnet20", "Wide ResNet-20", "ResNet-20 at twice the width (32/64/128 channels).",
          lambda shape, classes, **kw: ResNet(shape, classes, (32, 64, 128), 3, **kw))
