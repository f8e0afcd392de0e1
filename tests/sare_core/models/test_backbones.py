import pytest
import torch
from torchvision.models import ResNet18_Weights

from sare_core.models import Preprocessor, build_backbone, load_rgb
from sare_core.models.backbones import build_efficientnet_lite0_classifier


def _count(params):
    return sum(p.numel() for p in params)


def test_vgg16_cut_at_conv5_3_with_relu_and_trains_from_conv5_1():
    net = build_backbone("vgg16")
    out = net(torch.randn(1, 3, 64, 80))
    assert out.shape == (1, 512, 4, 5) and net.out_channels == 512 and net.stride == 16
    assert out.min() >= 0  # conv5_3's ReLU is kept
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert _count(trainable) == 3 * (512 * 512 * 9 + 512)  # conv5_1..conv5_3, nothing else
    assert isinstance(list(net.trainable.modules())[-1], torch.nn.ReLU)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.trainable.modules())


def test_vgg16_train_from_other_layer_and_errors():
    net = build_backbone("vgg16", train_from="conv4_1")
    assert _count(p for p in net.parameters() if p.requires_grad) == 3 * (512 * 512 * 9 + 512) + (256 * 512 * 9 + 512) + 2 * (512 * 512 * 9 + 512)
    with pytest.raises(ValueError, match="train_from"):
        build_backbone("vgg16", train_from="conv6_1")
    with pytest.raises(ValueError, match="model.backbone"):
        build_backbone("alexnet")
    with pytest.raises(ValueError, match="no package ships"):
        build_backbone("vgg16", weights="imagenet")
    with pytest.raises(FileNotFoundError, match="model.weights"):
        build_backbone("vgg16", weights="/nonexistent/vgg16.pth")


@pytest.mark.parametrize("name,cut,channels,stride", [
    ("resnet18", "layer3", 256, 16), ("resnet18", "layer4", 512, 32),
    ("resnet50", "layer3", 1024, 16), ("resnet50", "layer4", 2048, 32),
])
def test_resnet_cuts(name, cut, channels, stride):
    net = build_backbone(name, cut=cut)
    out = net(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, channels, 64 // stride, 64 // stride)
    assert net.out_channels == channels and net.stride == stride
    # Only the last stage trains by default; frozen BatchNorm stays in eval mode.
    net.train()
    assert all(not m.training for m in net.frozen.modules())
    assert all(p.requires_grad for p in net.trainable.parameters())


def test_frozen_batchnorm_statistics_do_not_move_in_training():
    net = build_backbone("resnet18")
    before = net.frozen[0][1].running_mean.clone()
    net.train()
    net(torch.randn(2, 3, 32, 32) * 5 + 3)
    torch.testing.assert_close(net.frozen[0][1].running_mean, before)


@pytest.mark.parametrize("freeze", [False, True])
def test_trainable_batchnorm_statistics_move_only_without_freeze_batchnorm(freeze):
    net = build_backbone("resnet18", cut="layer4", train_from="layer4")
    bn = next(m for m in net.trainable.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    net.freeze_batchnorm = freeze
    net.train()
    assert bn.training is not freeze and net.trainable.training
    out = net(torch.randn(2, 3, 64, 64) * 5 + 3)
    out.sum().backward()
    assert bn.weight.grad is not None  # the scale still learns either way
    moved = not torch.allclose(bn.running_mean, before)
    assert moved is not freeze


def test_local_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    import torchvision

    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    net = build_backbone("resnet18", weights=str(path), cut="layer3")
    torch.testing.assert_close(net.frozen[0][0].weight, full.conv1.weight)
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit resnet18"):
        build_backbone("resnet18", weights=str(tmp_path / "bad.pth"))


def test_efficientnet_lite0_and_tiny_shapes():
    net = build_backbone("efficientnet_lite0", weights="imagenet")
    assert net(torch.randn(1, 3, 96, 128)).shape == (1, 320, 3, 4)
    net4 = build_backbone("efficientnet_lite0", cut="blocks4")
    assert net4(torch.randn(1, 3, 64, 64)).shape == (1, 112, 4, 4)
    tiny = build_backbone("tiny")
    assert tiny(torch.randn(2, 3, 48, 64)).shape == (2, 64, 6, 8)


# ImageNet classes a street photo can plausibly get: buildings, street furniture, vehicles, urban scenes.
STREET_CLASSES = {
    "streetcar", "trolleybus", "traffic light", "street sign", "tile roof", "monastery", "church", "palace",
    "patio", "mobile home", "picket fence", "minivan", "planetarium", "boathouse", "dock", "bell cote",
    "cab", "school bus", "passenger car", "police van", "moving van", "limousine", "sports car", "convertible",
    "jeep", "pickup", "recreational vehicle", "parking meter", "bannister", "prison", "library", "cinema",
    "restaurant", "barbershop", "bakery", "bookshop", "toyshop", "shoe shop", "grocery store", "tobacco shop",
    "butcher shop", "confectionery", "apiary", "steel arch bridge", "suspension bridge", "viaduct", "pier",
    "triumphal arch", "dome", "mosque", "stupa", "castle", "obelisk", "fountain", "lakeside", "sliding door",
    "window screen", "window shade", "solar dish", "home theater", "flagpole", "pole", "chainlink fence",
    "worm fence", "stone wall", "unicycle", "tricycle", "mountain bike", "bicycle-built-for-two",
    "moped", "motor scooter", "tow truck", "trailer truck", "garbage truck", "fire engine", "ambulance",
    "beach wagon", "car wheel", "crane", "container ship", "liner", "shopping cart", "umbrella",
    "scoreboard", "cliff dwelling", "valley", "alp", "vault", "altar", "thatch", "yurt", "water tower",
    "greenhouse", "turnstile", "freight car", "electric locomotive",
    "barn", "lumbermill", "cash machine", "mailbox", "park bench", "plate rack",
}


def test_street_class_names_are_imagenet_classes():
    assert STREET_CLASSES <= set(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _top5_hits(model, images):
    cats = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # class names ship with torchvision
    prep = Preprocessor("efficientnet_lite0", image_size=(224, 224))
    batch = torch.stack([prep(load_rgb(str(p))) for p in images])
    with torch.no_grad():
        top5 = model(batch).topk(5, dim=1).indices
    return sum(any(cats[i] in STREET_CLASSES for i in row.tolist()) for row in top5)


def test_efficientnet_lite0_imagenet_weights_classify_real_street_photos(toy_street_images):
    assert len(toy_street_images) == 22
    pretrained = build_efficientnet_lite0_classifier("imagenet").eval()
    hits = _top5_hits(pretrained, toy_street_images)
    assert hits >= 0.8 * len(toy_street_images), f"only {hits}/22 street photos got a street/building class"
    # Control: the same check on random weights fails, so the check has teeth.
    torch.manual_seed(0)
    random = build_efficientnet_lite0_classifier("none").eval()
    assert _top5_hits(random, toy_street_images) < hits


@pytest.mark.parametrize("train", [False, True])
def test_efficientnet_lite0_equals_timms_tf_efficientnet_lite0(train):
    """sare_core's network is timm's layout without timm: same tensors by name, same outputs to the bit."""
    timm = pytest.importorskip("timm")
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).train(train)
    ours = build_efficientnet_lite0_classifier("imagenet").train(train)
    assert list(ours.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(ours.state_dict())
    torch.manual_seed(0)
    for shape in ((2, 3, 120, 160), (1, 3, 97, 131), (3, 3, 64, 128)):  # odd sizes exercise SAME padding
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.equal(ours(x), reference(x)), shape


def test_building_a_model_imports_neither_timm_nor_torchvision_unless_it_needs_them():
    import subprocess
    import sys

    code = ("import sys\nfrom sare_core.models.embedding import build_model\n"
            "build_model({'backbone': 'efficientnet_lite0', 'weights': 'imagenet', 'num_clusters': 4})\n"
            "sys.exit(bool({'timm', 'torchvision'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
