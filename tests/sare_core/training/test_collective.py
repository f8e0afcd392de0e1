"""How workers split the images to embed: shares follow the frozen-feature caches (a cached image costs a
worker `hit_cost` of an uncached one) and stay near equal in cost; every image is embedded exactly once."""

import numpy as np
import pytest

from sare_core.training.collective import MAX_SLOWNESS, cache_affine_shares, slowness_from_paces

HIT = 0.35


def _costs(held, shares):
    return [sum(HIT if held[w, i] else 1.0 for i in share) for w, share in enumerate(shares)]


def _assert_partition(shares, count):
    assert all(np.all(np.diff(s) > 0) for s in shares)  # sorted, no repeats
    np.testing.assert_array_equal(np.sort(np.concatenate(shares)), np.arange(count))


def test_nothing_cached_gives_contiguous_equal_shares():
    shares = cache_affine_shares(np.zeros((3, 8), dtype=bool), HIT)
    assert [s.tolist() for s in shares] == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_each_worker_takes_what_it_holds_and_the_uncached_fill_up_to_equal_cost():
    held = np.zeros((2, 40), dtype=bool)
    held[0, :20] = True  # worker 0 holds the first half: 20 x 0.35 = 7 units; 20 uncached images left
    shares = cache_affine_shares(held, HIT)
    _assert_partition(shares, 40)
    assert set(range(20)) <= set(shares[0].tolist())  # it keeps all it holds
    costs = _costs(held, shares)
    assert abs(costs[0] - costs[1]) <= 1.0 + 1e-9 and len(shares[1]) == 14  # 7 + 6 = 13 vs 14


def test_a_worker_holding_everything_hands_some_over_at_full_cost():
    held = np.zeros((2, 100), dtype=bool)
    held[0] = True
    shares = cache_affine_shares(held, HIT)
    _assert_partition(shares, 100)
    costs = _costs(held, shares)
    assert abs(costs[0] - costs[1]) <= 1.0 + 1e-9 and len(shares[1]) == 26  # 74 x 0.35 = 25.9 vs 26


def test_images_held_by_several_workers_go_to_the_least_loaded_holder():
    held = np.zeros((2, 10), dtype=bool)
    held[:, :6] = True  # both hold 0-5; worker 0 also holds 6-9
    held[0, 6:] = True
    shares = cache_affine_shares(held, HIT)
    _assert_partition(shares, 10)
    assert set(range(6, 10)) <= set(shares[0].tolist()) and len(shares[0]) == 5 and len(shares[1]) == 5


def test_no_items_one_worker_and_a_bad_hit_cost():
    assert [len(s) for s in cache_affine_shares(np.zeros((3, 0), dtype=bool), HIT)] == [0, 0, 0]
    assert cache_affine_shares(np.ones((1, 5), dtype=bool), HIT)[0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="hit_cost=0"):
        cache_affine_shares(np.ones((2, 5), dtype=bool), 0.0)


def test_many_workers_with_overlapping_caches_end_within_one_image():
    rng = np.random.default_rng(7)
    held = rng.random((8, 20_000)) < 0.5  # most images held by several workers, as after a few epochs
    shares = cache_affine_shares(held, HIT)
    _assert_partition(shares, 20_000)
    costs = _costs(held, shares)
    assert max(costs) - min(costs) <= 1.0 + 1e-9
    # every image some cache holds is embedded by a worker that holds it
    assert all(held[w, s[held[:, s].any(axis=0)]].all() for w, s in enumerate(shares))


@pytest.mark.parametrize("seed", range(20))
def test_random_holdings_are_split_exactly_once_within_one_image_of_equal_cost(seed):
    rng = np.random.default_rng(seed)
    world, count = int(rng.integers(1, 9)), int(rng.integers(1, 600))
    held = rng.random((world, count)) < rng.random((world, 1))
    shares = cache_affine_shares(held, HIT)
    _assert_partition(shares, count)
    costs = _costs(held, shares)
    assert max(costs) - min(costs) <= 1.0 + 1e-9
    # never worse than ignoring the caches (contiguous shares) by more than one image
    contiguous = _costs(held, np.array_split(np.arange(count), world))
    assert max(costs) <= max(contiguous) + 1.0 + 1e-9


def _times(held, shares, slowness):
    return [slowness[w] * c for w, c in enumerate(_costs(held, shares))]


def test_a_slower_worker_gets_a_proportionally_cheaper_contiguous_share_when_nothing_is_cached():
    shares = cache_affine_shares(np.zeros((2, 9), dtype=bool), HIT, np.array([200, 100]))
    assert [s.tolist() for s in shares] == [[0, 1, 2], [3, 4, 5, 6, 7, 8]]
    equal = cache_affine_shares(np.zeros((3, 8), dtype=bool), HIT, np.array([150, 150, 150]))
    assert [s.tolist() for s in equal] == [[0, 1, 2], [3, 4, 5], [6, 7]]  # equal slowness: as without


def test_a_slower_worker_keeps_its_cached_images_and_hands_uncached_ones_to_the_faster():
    held = np.zeros((2, 40), dtype=bool)
    held[0, :20] = True  # worker 0 holds half (7 units) but takes twice as long per image as worker 1
    shares = cache_affine_shares(held, HIT, np.array([200, 100]))
    _assert_partition(shares, 40)
    assert set(range(20)) <= set(shares[0].tolist())
    times = _times(held, shares, [2.0, 1.0])
    assert max(times) - min(times) <= 2.0 + 1e-9  # 2 x (7 + 2) = 18 against 18
    assert len(shares[1]) > 14  # more than the 14 it takes at equal speed


@pytest.mark.parametrize("seed", range(20))
def test_random_holdings_and_speeds_finish_within_one_image_of_each_other(seed):
    rng = np.random.default_rng(100 + seed)
    world, count = int(rng.integers(1, 9)), int(rng.integers(1, 600))
    held = rng.random((world, count)) < rng.random((world, 1))
    slowness = rng.integers(100, 401, size=world)
    shares = cache_affine_shares(held, HIT, slowness)
    _assert_partition(shares, count)
    times = _times(held, shares, slowness / 100)
    # every worker ends within one uncached image, at its own speed, of the last to finish
    assert all(max(times) - t <= s / 100 + 1e-9 for t, s in zip(times, slowness))
    # never slower than the split that ignores the speeds, by more than one image on the slowest worker
    unweighted = _times(held, cache_affine_shares(held, HIT), slowness / 100)
    assert max(times) <= max(unweighted) + slowness.max() / 100 + 1e-9


def test_a_bad_slowness_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"slowness=\[100, 0\]"):
        cache_affine_shares(np.ones((2, 5), dtype=bool), HIT, np.array([100, 0]))
    with pytest.raises(ValueError, match="2 positive integers"):
        cache_affine_shares(np.ones((2, 5), dtype=bool), HIT, np.array([100, 100, 100]))


def test_an_item_goes_to_the_worker_it_leaves_lowest_not_only_the_least_loaded():
    # worker 1 holds images 0-1 (2 x 0.35 x 2 = 1.4), worker 2 image 2 (0.35); idle worker 0 is slow, and
    # one uncached image would cost it 2 > 1.4: the fast worker 2 takes one at 1 (0.35 + 1 = 1.35 < 1.4)
    held = np.array([[0, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    shares = cache_affine_shares(held, HIT, np.array([200, 200, 100]))
    assert [s.tolist() for s in shares] == [[], [1], [0, 2]]


def test_slowness_from_paces_is_relative_to_the_fastest_capped_and_none_until_all_timed():
    assert slowness_from_paces(np.array([0.02, 0.01, 0.013])).tolist() == [200, 100, 130]
    assert slowness_from_paces(np.array([1.0, 0.001])).tolist() == [MAX_SLOWNESS, 100]
    assert slowness_from_paces(np.array([0.02, 0.0])) is None  # one worker has not timed a share yet
    assert slowness_from_paces(np.array([0.5])).tolist() == [100]


def test_without_speeds_two_workers_split_as_before_speeds_existed():
    # Runs made before `slowness` existed (two workers: the demo, the Nordland study) must split the same,
    # or they stop reproducing. Worker 1 holds image 1: both uncached images could go either way at equal
    # cost; the earlier version gave worker 0 image 2 (computed with it), a level-search fill gives image 0.
    held = np.array([[0, 0, 0], [0, 1, 0]], dtype=bool)
    assert [s.tolist() for s in cache_affine_shares(held, HIT)] == [[2], [0, 1]]
    held = np.zeros((2, 12), dtype=bool)
    held[0, [0, 1, 2, 3, 7]] = True
    held[1, [2, 3, 4, 10]] = True
    assert [s.tolist() for s in cache_affine_shares(held, HIT)] == [[0, 1, 5, 6, 7, 8], [2, 3, 4, 9, 10, 11]]
