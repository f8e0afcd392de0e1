"""The extraction stage's configs: `ExtractSettings` (how an extraction runs: roles, resources, output
precision, resume) and `ExtractConfig` (what `sare extract` runs: dataset, model, store, plus those)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sare_core.data.names import ROLES
from sare_core.paths import is_remote


class ExtractSettings(BaseModel):
    """How an extraction runs, whatever it extracts: the fields `sare eval --manifest` and the demo accept in
    their `extract:` sections.

    Every resource field left at None is chosen from the cluster's resources when the run starts (see
    `plan.plan_resources`); the chosen values are logged and returned in `ExtractResult.plan`.
    """

    model_config = ConfigDict(extra="forbid")

    roles: list[Literal["database", "query"]] = Field(list(ROLES), min_length=1)
    images_root: str | None = Field(None, description="folder that relative image paths and ids are relative "
                                    "to (default: the dataset file's folder, or the dataset folder)")
    query_root: str | None = Field(None, description="dbStruct only: folder of the query images "
                                   "(default: images_root)")
    dataset_name: str | None = Field(None, description="recorded in the store (default: '<folder>/<file>')")
    dtype: Literal["float32", "float16"] = "float32"
    truncate: int | None = Field(None, ge=1, description="store each descriptor's first K elements, "
                                 "re-L2-normalised (sare_core.descriptors.truncate)")

    ray_address: str | None = Field(None, description="Ray cluster to join (default: RAY_ADDRESS, or a local one)")
    use_gpu: bool | None = Field(None, description="default: when the cluster has GPUs")
    layout: Literal["auto", "actors", "driver"] = Field("auto", description="where the model runs: an actor "
        "pool (every node's CPUs or GPUs), or the driver process on the decode tasks' output (one node; no "
        "actor start-up). auto: the driver for small jobs on a one-node CPU cluster, else actors (plan.py)")
    num_actors: int | None = Field(None, ge=1, description="model actors (default: one per GPU; on CPUs "
                                   "one per CPU / threads_per_actor)")
    threads_per_actor: int | None = Field(None, ge=1, description="torch threads in each actor (default 1)")
    actor_cpus: float | None = Field(None, gt=0, description="logical CPUs each model actor reserves (default: "
                                     "1 with a GPU; on CPUs the share the decode tasks leave)")
    batch_size: int | None = Field(None, ge=1, description="images per model forward pass (default 32 on "
                                   "CPU, 128 on GPU)")
    decode_batch_size: int | None = Field(None, ge=1, description="images per decode task and model actor call "
                                          "(default: about 32 MB of decoded pixels, 16..1024; at most a quarter "
                                          "of the job in layout driver, whose first block is at most 2 model "
                                          "batches)")
    decode_tasks: int | None = Field(None, ge=1, description="concurrent decode tasks (default: the CPUs "
                                     "the GPU actors leave; on CPU clusters one per 4 CPUs)")
    decode_cpus: float | None = Field(None, gt=0, description="logical CPUs per decode task (default 1)")
    rows_per_part: int | None = Field(None, ge=1, description="rows per store part (default: about 64 MB "
                                      "of descriptors, at most 1/8 of the images)")
    write_tasks: int | None = Field(None, ge=1, description="concurrent part writers (default 2, fewer for "
                                    "fewer parts)")
    object_store_memory: int | None = Field(None, ge=1 << 20, description="bytes of object store the "
                                            "pipeline may fill (default: half the cluster's object store)")
    mixed_precision: bool = Field(True, description="GPU only: autocast float16, NetVLAD in float32 "
                                  "(descriptors stay float32)")
    channels_last: bool = Field(True, description="GPU only: channels-last memory format")
    compile: bool = Field(True, description="GPU only: torch.compile each model (seconds per batch shape "
                          "at its first batch; then 1.41x eager through the actor on an H200, "
                          "results/gpu_device_2026-12-04_run4)")

    resume: bool = Field(True, description="continue an interrupted or earlier run into the same store; "
                         "False: fail when the store exists")
    max_failure_fraction: float = Field(0.01, ge=0, le=1, description="fraction of images that may fail "
                                        "before the run reports failure (exit status 3)")
    progress_bars: bool = Field(True, description="Ray Data progress bars")
    log_every_s: float = Field(10.0, gt=0, description="seconds between throughput log lines")


class ExtractConfig(ExtractSettings):
    """`sare extract`: which images, which model, where to (and, from ExtractSettings, how)."""

    dataset: str = Field(description="manifest (.csv/.parquet), dbStruct .mat, or a dataset folder")
    model: str = Field(description="a saved model (sare_core.models.save_model) or a model-config YAML "
                       "(a ModelConfig mapping, or a run config with a model: section) for an off-the-shelf model")
    out: str = Field(description="descriptor store to write: local folder or s3://bucket/prefix")
    splits: list[str] | None = Field(None, description="splits to extract (default: all in the dataset)")
    seed: int = Field(0, description="seeds the random initialisation of an off-the-shelf model config")

    @field_validator("splits")
    @classmethod
    def _splits(cls, value):
        if value is not None and not value:
            raise ValueError("give at least one split, or leave splits unset for all")
        return value

    def check_inputs(self) -> None:
        """FileNotFoundError / ValueError naming the field when an input is missing (before any work)."""
        if not is_remote(self.dataset) and not os.path.exists(self.dataset):
            raise FileNotFoundError(f"dataset: no such file or folder: {self.dataset}")
        if not is_remote(self.model) and not os.path.isfile(self.model):
            raise FileNotFoundError(f"model: no such file: {self.model}")
        for name in ("images_root", "query_root"):
            value = getattr(self, name)
            if value is not None and not is_remote(value) and not os.path.isdir(value):
                raise FileNotFoundError(f"{name}: no such folder: {value}")
