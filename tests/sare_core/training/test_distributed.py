"""Data-parallel training equals one process: a DDP step over two processes (gloo on CPUs, NCCL on GPUs)
gives the weights one process gets from the whole batch, and the collective all-gathers every worker's
descriptors in order."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from sare_core.losses import sare_loss
from sare_core.models.config import ModelConfig
from sare_core.models.embedding import build_model
from sare_core.models.images import load_rgb
from sare_core.training.collective import DistributedCollective
from sare_core.training.config import TrainConfig
from sare_core.training.optim import make_optimizer

TUPLES, NEGATIVES = 4, 3  # per worker
CONFIG = ModelConfig(backbone="tiny", num_clusters=4, whitening_dim=None, image_size=(32, 48))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(device):
    torch.manual_seed(0)
    model = build_model(CONFIG).to(device)
    model.backbone.freeze_batchnorm = True  # as training runs: BatchNorm normalises with stored statistics
    return model


def _batch(rank: int, device) -> torch.Tensor:
    """Rank `rank`'s tuples: TUPLES x (query, positive, NEGATIVES negatives) images."""
    g = torch.Generator().manual_seed(100 + rank)
    return torch.rand(TUPLES * (2 + NEGATIVES), 3, *CONFIG.image_size, generator=g).to(device)


def _loss(desc: torch.Tensor) -> torch.Tensor:
    d = desc.view(-1, 2 + NEGATIVES, desc.shape[1])
    return sare_loss(d[:, 0], d[:, 1], d[:, 2:], kernel="gaussian", mode="joint")


def _step(model, optimizer, images_per_rank: list[torch.Tensor]) -> None:
    """One SGD step on the mean loss over the ranks' batches (what DDP's gradient averaging computes)."""
    loss = torch.stack([_loss(model(x)) for x in images_per_rank]).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _join(rank: int, world: int, backend: str, port: int) -> torch.device:
    """Join a process group of `world` on loopback (one thread per process); this rank's device (its GPU
    under NCCL)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    return device


def _worker(rank: int, world: int, backend: str, port: int, out: str, channels_last: bool = False) -> None:
    device = _join(rank, world, backend, port)
    try:
        model = _model(device).train()
        if channels_last:  # as TrainingState.start converts it, before DDP sees it
            model.to(memory_format=torch.channels_last)
        ddp = DistributedDataParallel(model, device_ids=[rank] if backend == "nccl" else None)
        optimizer = make_optimizer(model.trainable_parameters(), TrainConfig(dataset="-", lr=0.05))
        loss = _loss(ddp(_batch(rank, device)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        collective = DistributedCollective(device)
        gathered = collective.gather(rank * 10)
        flags = collective.any(rank == 1), collective.any(False)
        sums = collective.sum([rank + 1.0, 2.0])
        if rank == 0:
            state = {k: v.cpu().contiguous() for k, v in model.state_dict().items()}
            torch.save({"state": state, "gathered": gathered, "flags": flags, "sums": sums}, out)
    finally:
        dist.destroy_process_group()


def _run(backend: str, tmp_path, channels_last: bool = False) -> dict:
    out = str(tmp_path / f"{backend}.pt")
    mp.spawn(_worker, args=(2, backend, _free_port(), out, channels_last), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def _single_process(device) -> dict:
    model = _model(device).train()
    optimizer = make_optimizer(model.trainable_parameters(), TrainConfig(dataset="-", lr=0.05))
    _step(model, optimizer, [_batch(0, device), _batch(1, device)])
    return {k: v.cpu() for k, v in model.state_dict().items()}


def _assert_same_weights(distributed: dict, single: dict, atol: float) -> None:
    initial = _model("cpu").state_dict()
    for key, value in single.items():
        torch.testing.assert_close(distributed[key], value, atol=atol, rtol=1e-4, msg=key)
    assert any(not torch.equal(value, initial[key]) for key, value in single.items())  # the step moved weights


def test_a_two_process_gloo_ddp_step_equals_one_process(tmp_path):
    result = _run("gloo", tmp_path)
    _assert_same_weights(result["state"], _single_process("cpu"), atol=1e-6)
    assert result["gathered"] == [0, 10] and result["flags"] == (True, False) and result["sums"] == [3.0, 4.0]


def test_a_ddp_step_in_channels_last_equals_one_channels_first_process(tmp_path):
    result = _run("gloo", tmp_path, channels_last=True)
    _assert_same_weights(result["state"], _single_process("cpu"), atol=1e-5)


@pytest.mark.gpu
def test_a_two_process_nccl_ddp_step_equals_one_process(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices (NCCL runs one rank per GPU)")
    result = _run("nccl", tmp_path)
    _assert_same_weights(result["state"], _single_process("cuda:0"), atol=1e-5)


def test_the_collective_embeds_shares_and_gathers_them_in_order(tmp_path, toy_street_images):
    paths = [str(p) for p in toy_street_images[:7]]  # 7 images over 2 workers: shares of 4 and 3
    out = str(tmp_path / "embed.npy")
    mp.spawn(_embed_worker, args=(2, _free_port(), paths, out), nprocs=2, join=True)
    from sare_core.models.inference import embed_paths

    expected = embed_paths(_model("cpu"), paths, batch_size=3)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def _embed_worker(rank: int, world: int, port: int, paths: list[str], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        gathered = DistributedCollective("cpu").embed(_model("cpu"), paths, batch_size=3)
        if rank == 0:
            np.save(out, gathered)
    finally:
        dist.destroy_process_group()


def test_the_collective_embeds_cached_images_where_they_are_cached(tmp_path, toy_street_images):
    paths = [str(p) for p in toy_street_images[:12]]
    out = str(tmp_path / "cached.pt")
    mp.spawn(_cached_embed_worker, args=(2, _free_port(), paths, out), nprocs=2, join=True)
    from sare_core.models.inference import embed_paths

    result = torch.load(out, weights_only=False)
    np.testing.assert_allclose(result["gathered"], embed_paths(_cached_model(), paths, batch_size=3), atol=1e-5)
    # worker 0 held images 0-5 (6 x 0.35 = 2.1), worker 1 held 6-7 (0.7): each embedded those from its cache
    # and the 4 uncached images brought both to near-equal cost, 1 to worker 0 (3.1) and 3 to worker 1 (3.7)
    assert result["counts"] == [(6, 1), (2, 3)]


@pytest.mark.parametrize("balance", [True, False])
def test_a_worker_that_embedded_more_slowly_gets_a_cheaper_share(tmp_path, toy_street_images, balance):
    paths = [str(p) for p in toy_street_images[:12]]
    out = str(tmp_path / "paced.pt")
    mp.spawn(_cached_embed_worker, args=(2, _free_port(), paths, out, (0.02, 0.01), balance), nprocs=2, join=True)
    from sare_core.models.inference import embed_paths

    result = torch.load(out, weights_only=False)
    np.testing.assert_allclose(result["gathered"], embed_paths(_cached_model(), paths, batch_size=3), atol=1e-5)
    if balance:
        # both workers gathered the same slowness from the paces: worker 0 takes twice as long per image,
        # so it embeds only the 6 it holds (6 x 0.35 x 2 = 4.2) and worker 1 all 4 uncached ones (0.7 + 4 =
        # 4.7; one more to worker 0 would cost it 2 more)
        assert result["slowness"] == [[200, 100], [200, 100]]
        assert result["counts"] == [(6, 0), (2, 4)]
        # each worker timed its share and folded it into its pace (an exponential mean with the preset one)
        assert all(preset / 2 < pace != preset for pace, preset in zip(result["paces"], (0.02, 0.01)))
    else:  # off (the default): the paces are neither used nor updated; the equal-speed split of the test above
        assert result["slowness"] == [None, None]
        assert result["counts"] == [(6, 1), (2, 3)]
        assert result["paces"] == [0.02, 0.01]


def _cached_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="tiny", num_clusters=4, whitening_dim=None, image_size=(32, 48),
                                   train_from="conv3"))


def _cached_embed_worker(rank: int, world: int, port: int, paths: list[str], out: str,
                         paces: tuple[float, ...] | None = None, balance: bool = False) -> None:
    from sare_core.models.frozen_cache import FrozenFeatureCache
    from sare_core.models.inference import embed_paths

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _cached_model()
        collective = DistributedCollective("cpu")
        collective.frozen_cache = FrozenFeatureCache(model.backbone.frozen, 2**30)
        collective.balance_by_speed = balance
        if paces is not None:
            collective.pace = paces[rank]
        embed_paths(model, paths[:6] if rank == 0 else paths[6:8], batch_size=3, cache=collective.frozen_cache)
        before = collective.frozen_cache.hits, collective.frozen_cache.misses
        gathered = collective.embed(model, paths, batch_size=3)
        counts = collective.gather((collective.frozen_cache.hits - before[0], collective.frozen_cache.misses - before[1]))
        slowness = collective.gather(None if collective.last_slowness is None else collective.last_slowness.tolist())
        paces = collective.gather(collective.pace)
        if rank == 0:
            torch.save({"gathered": gathered, "counts": counts, "slowness": slowness, "paces": paces}, out)
    finally:
        dist.destroy_process_group()


def _shared_cache_worker(rank: int, world: int, port: int, paths: list[str], out: str, share: bool,
                         backend: str = "gloo", block_maps: int | None = None,
                         budget_maps: tuple[int | None, ...] = (None, None)) -> None:
    """Worker 0 caches images 0-5 and worker 1 images 6-7, then both embed all 12 twice through the
    collective. block_maps: maps per all-gather block (default: the module's); budget_maps: each worker's
    cache budget in maps (None: 1 GiB)."""
    from sare_core.models.frozen_cache import FrozenFeatureCache
    from sare_core.models.inference import embed_paths
    from sare_core.training import collective as collective_module

    device = _join(rank, world, backend, port)
    try:
        model = _cached_model().to(device)
        prep = model.preprocessor
        probe = FrozenFeatureCache(model.backbone.frozen, 0, device)  # computes a map without keeping it
        map_bytes = probe.compute(prep.normalize_uint8(prep.to_uint8(load_rgb(paths[0]))[None])).numel() * 4
        if block_maps is not None:
            collective_module.SHARE_BLOCK_BYTES = block_maps * map_bytes
        budget = 2**30 if budget_maps[rank] is None else budget_maps[rank] * map_bytes
        collective = DistributedCollective(device)
        collective.frozen_cache = cache = FrozenFeatureCache(model.backbone.frozen, budget, device)
        collective.share_cache = share
        embed_paths(model, paths[:6] if rank == 0 else paths[6:8], batch_size=3, device=device, cache=cache)
        first = collective.embed(model, paths, batch_size=3)
        held_after_first = (len(cache), cache.adopted)
        misses = cache.misses
        second = collective.embed(model, paths, batch_size=3)
        result = {"held": collective.gather(held_after_first), "second_misses": collective.gather(cache.misses - misses),
                  "maps": cache.maps([p for p in paths if p in cache]), "held_paths": [p for p in paths if p in cache]}
        everyone = collective.gather(result)
        if rank == 0:
            torch.save({"first": first, "second": second, "workers": everyone}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("share", [True, False])
def test_workers_hand_each_other_the_frozen_maps_they_computed(tmp_path, toy_street_images, share):
    _check_shared_maps(tmp_path, toy_street_images, share, "gloo")


def test_the_maps_travel_in_blocks_of_unequal_fill(tmp_path, toy_street_images):
    # worker 0 sends 7 maps and worker 1 sends 5, two per all-gather: 4 blocks, the last ones part-empty
    _check_shared_maps(tmp_path, toy_street_images, True, "gloo", block_maps=2)


def test_no_maps_are_shared_while_a_worker_lacks_room_for_all_it_would_get(tmp_path, toy_street_images):
    # worker 1 has room for 8 maps: it holds 5 after the first call and would get 7, so nothing is shared
    # (filling it with copies would shrink what the two caches hold between them)
    _check_shared_maps(tmp_path, toy_street_images, True, "gloo", budget_maps=(None, 8), expect_shared=False)


@pytest.mark.gpu
def test_workers_hand_each_other_the_frozen_maps_over_nccl(tmp_path, toy_street_images):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices (NCCL runs one rank per GPU)")
    _check_shared_maps(tmp_path, toy_street_images, True, "nccl")


def _check_shared_maps(tmp_path, toy_street_images, share: bool, backend: str, block_maps: int | None = None,
                       budget_maps=(None, None), expect_shared: bool | None = None) -> None:
    paths = [str(p) for p in toy_street_images[:12]]
    out = str(tmp_path / "shared.pt")
    mp.spawn(_shared_cache_worker, args=(2, _free_port(), paths, out, share, backend, block_maps, budget_maps),
             nprocs=2, join=True)
    from sare_core.models.frozen_cache import FrozenFeatureCache
    from sare_core.models.inference import embed_paths

    result = torch.load(out, weights_only=False)
    expected = embed_paths(_cached_model(), paths, batch_size=3)
    atol = 1e-5 if backend == "gloo" else 2e-3  # CUDA convolutions may round through TF32
    np.testing.assert_allclose(result["first"], expected, atol=atol)
    np.testing.assert_allclose(result["second"], expected, atol=atol)
    workers = result["workers"]
    if share if expect_shared is None else expect_shared:
        # the first call split the 4 uncached images 1 / 3 (as without sharing), then each worker adopted what
        # the other held and computed: worker 0 the 2 + 3 of worker 1, worker 1 the 6 + 1 of worker 0
        assert workers[0]["held"] == [(12, 5), (12, 7)]
        assert workers[0]["second_misses"] == [0, 0]
    else:
        assert workers[0]["held"] == [(7, 0), (5, 0)]
        assert workers[0]["second_misses"] == [0, 0]  # the second call's shares follow the caches
    # every map a worker holds, its own or adopted, is what the frozen layers make of that image
    model = _cached_model()
    reference, prep = FrozenFeatureCache(model.backbone.frozen, 2**30), model.preprocessor
    for worker in workers:
        pixels = prep.normalize_uint8(np.stack([prep.to_uint8(load_rgb(p)) for p in worker["held_paths"]]))
        torch.testing.assert_close(worker["maps"], reference.compute(pixels), atol=atol, rtol=1e-3)
