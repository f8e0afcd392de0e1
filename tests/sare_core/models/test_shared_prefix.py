"""Frozen-prefix digests: equal for a model and its fine-tuned copy, different when the prefix computes
something else (weights, preprocessing, where the prefix ends), absent without frozen layers."""

import copy

import torch

from sare_core.models import ModelConfig, build_model
from sare_core.models.shared_prefix import frozen_prefix_digest, group_by_frozen_prefix


def tiny_model(seed=0, train_from="conv3", image_size=(48, 64)):
    torch.manual_seed(seed)
    return build_model(ModelConfig(backbone="tiny", num_clusters=8, image_size=image_size, train_from=train_from))


def fine_tuned(model):
    """A copy whose trainable layers changed, as training changes them."""
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for param in tuned.trainable_parameters():
            param.add_(0.1)
    return tuned


def test_a_fine_tuned_copy_shares_the_prefix_and_other_prefixes_do_not():
    base = tiny_model()
    digest = frozen_prefix_digest(base)
    assert digest is not None and len(digest) == 16
    assert frozen_prefix_digest(fine_tuned(base)) == digest
    assert frozen_prefix_digest(tiny_model(seed=1)) != digest  # other frozen weights
    assert frozen_prefix_digest(tiny_model(train_from="conv4")) != digest  # the prefix ends elsewhere
    assert frozen_prefix_digest(tiny_model(image_size=(64, 48))) != digest  # other preprocessing
    running_stats = fine_tuned(base)
    running_stats.backbone.frozen[0][1].running_mean += 1.0  # a buffer, not a parameter
    assert frozen_prefix_digest(running_stats) != digest
    assert frozen_prefix_digest(tiny_model(train_from="all")) is None


def test_models_are_grouped_by_prefix_in_first_seen_order():
    base = tiny_model()
    other = tiny_model(seed=1)
    whole = tiny_model(train_from="all")
    models = [base, other, fine_tuned(base), whole, fine_tuned(whole), fine_tuned(other)]
    assert group_by_frozen_prefix(models) == [[0, 2], [1, 5], [3], [4]]
