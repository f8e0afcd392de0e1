"""The extraction's configs and resource plans, without Ray."""

import pyarrow as pa
import pytest

from pipelines.extract.config import ExtractConfig
from pipelines.extract.pipeline import decode_blocks
from pipelines.extract.plan import plan_resources
from sare_core.config_io import load_config


def test_resource_plans_follow_the_cluster():
    config = ExtractConfig(dataset="d", model="m", out="o")
    assert plan_resources(config, 2, 0, 5_000, 4096, 96 * 72 * 3).layout == "driver"  # small job, one node
    assert plan_resources(config, 2, 0, 5_001, 4096, 96 * 72 * 3).layout == "actors"
    assert plan_resources(config, 2, 0, 100, 4096, 96 * 72 * 3, nodes=2).layout == "actors"
    # several models over each image (run_many): the work is images x models
    assert plan_resources(config, 2, 0, 2_500, 4096, 96 * 72 * 3, models=2).layout == "driver"
    assert plan_resources(config, 2, 0, 3_400, 4096, 96 * 72 * 3, models=2).layout == "actors"  # the demo's
    driver = plan_resources(config, 2, 0, 3_000, 4096, 96 * 72 * 3)
    assert (driver.num_actors, driver.threads_per_actor, driver.decode_tasks) == (0, 2, 1)
    # one consumer: blocks by bytes (1,024 of these images), but at least DRIVER_MIN_BLOCKS (4) per job
    assert driver.decode_batch_size == 750 and driver.first_block_size == 64  # two model batches first
    assert plan_resources(config, 2, 0, 3_000, 4096, 480 * 640 * 3).decode_batch_size == 36  # about 32 MB
    assert plan_resources(config, 2, 0, 100, 4096, 96 * 72 * 3).decode_batch_size == 32  # MIN_BLOCK_IMAGES
    laptop = plan_resources(config, 2, 0, 10_000, 4096, 96 * 72 * 3)
    assert laptop.layout == "actors"
    assert not laptop.use_gpu and laptop.num_actors == 2 and laptop.threads_per_actor == 1
    assert laptop.decode_tasks == 1 and laptop.decode_cpus == 1 and laptop.actor_cpus == 0.5
    assert laptop.rows_per_part == 1250  # 1/8 of the images (< 64 MB)
    assert 16 <= laptop.decode_batch_size <= 1024 and laptop.first_block_size == laptop.decode_batch_size
    gpus = plan_resources(config, 32, 4, 250_000, 4096, 480 * 640 * 3, object_store_capacity=8e9)
    assert gpus.use_gpu and gpus.num_actors == 4 and gpus.decode_tasks == 28 and gpus.batch_size == 128
    assert gpus.rows_per_part == 4096 and gpus.object_store_memory == 4_000_000_000
    assert gpus.decode_batch_size == 36  # about 32 MB of 480x640 images
    cpus16 = plan_resources(config, 16, 0, 250_000, 32768, 480 * 640 * 3)
    assert cpus16.threads_per_actor == 1 and cpus16.num_actors == 16 and cpus16.decode_tasks == 4
    assert cpus16.actor_cpus == 0.75
    assert cpus16.rows_per_part == 512
    actors = config.model_copy(update={"layout": "actors"})
    one_cpu = plan_resources(actors, 1, 0, 100, 64, 100)
    assert (one_cpu.num_actors, one_cpu.actor_cpus, one_cpu.decode_cpus) == (1, 0.5, 0.5)
    threads = plan_resources(actors.model_copy(update={"threads_per_actor": 2}), 8, 0, 100, 64, 100)
    assert (threads.num_actors, threads.decode_tasks, threads.actor_cpus) == (4, 2, 1.5)
    with pytest.raises(ValueError, match="no CPU for decoding"):
        plan_resources(actors.model_copy(update={"num_actors": 2, "actor_cpus": 1}), 2, 0, 100, 64, 100)
    with pytest.raises(ValueError, match="no GPU"):
        plan_resources(config.model_copy(update={"use_gpu": True}), 2, 0, 100, 64, 100)


def test_decode_blocks_follow_the_plan():
    """The driver's first block is two model batches, then blocks of the plan's size, then the rest; every row
    once, in order. The actors get equal blocks."""
    config = ExtractConfig(dataset="d", model="m", out="o")
    rows = pa.table({"id": [str(i) for i in range(3_000)]})
    driver = plan_resources(config, 2, 0, 3_000, 1024, 160 * 120 * 3)
    blocks = decode_blocks(rows, driver.first_block_size, driver.decode_batch_size)
    assert [b.num_rows for b in blocks] == [64] + [582] * 5 + [26]
    assert pa.concat_tables(blocks).column("id").to_pylist() == rows.column("id").to_pylist()
    actors = plan_resources(config, 2, 0, 10_000, 1024, 160 * 120 * 3)
    sizes = [b.num_rows for b in decode_blocks(rows, actors.first_block_size, actors.decode_batch_size)]
    assert set(sizes[:-1]) == {actors.decode_batch_size} and sum(sizes) == 3_000
    assert [b.num_rows for b in decode_blocks(rows.slice(0, 10), 64, 582)] == [10]
    with pytest.raises(ValueError, match="at least 1"):
        decode_blocks(rows, 0, 582)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        load_config(ExtractConfig, None, ["batch_size=0"], base={"dataset": "d", "model": "m", "out": "o"})
    with pytest.raises(ValueError, match="max_failure_fraction"):
        load_config(ExtractConfig, None, ["max_failure_fraction=2"], base={"dataset": "d", "model": "m", "out": "o"})
    with pytest.raises(ValueError, match="no_such_field"):
        load_config(ExtractConfig, None, ["no_such_field=1"], base={"dataset": "d", "model": "m", "out": "o"})
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("extract:\n  dataset: d\n  model: m\n  out: o\n  batch_size: 7\nmodel:\n  backbone: tiny\n")
    config = load_config(ExtractConfig, yaml_file, ["num_actors=2"], base={"out": "o2"}, section="extract")
    assert (config.batch_size, config.num_actors, config.out) == (7, 2, "o2")
    with pytest.raises(FileNotFoundError, match="dataset"):
        config.check_inputs()
