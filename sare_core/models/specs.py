"""What each backbone offers, as plain data (no torch): its cuts, default cut and first trainable layer.

Kept apart from `backbones` so that configs (`ModelConfig`) validate without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKBONES = ("vgg16", "resnet18", "resnet50", "efficientnet_lite0", "tiny")


@dataclass(frozen=True)
class BackboneSpec:
    """Defaults for one backbone: where it is cut, where training starts, what each cut yields."""

    default_cut: str
    train_from_by_cut: dict  # cut -> the default first trainable layer
    cuts: tuple[str, ...]


SPECS = {
    "vgg16": BackboneSpec("conv5_3", {"conv5_3": "conv5_1", "conv4_3": "conv4_1"}, ("conv5_3", "conv4_3")),
    "resnet18": BackboneSpec("layer4", {"layer3": "layer3", "layer4": "layer4"}, ("layer3", "layer4")),
    "resnet50": BackboneSpec("layer3", {"layer3": "layer3", "layer4": "layer4"}, ("layer3", "layer4")),
    "efficientnet_lite0": BackboneSpec(
        "blocks6", {"blocks4": "blocks3", "blocks5": "blocks4", "blocks6": "blocks5"}, ("blocks4", "blocks5", "blocks6")
    ),
    "tiny": BackboneSpec("conv4", {"conv4": "conv1"}, ("conv4",)),
}
