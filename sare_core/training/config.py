"""TrainConfig: every number of the NetVLAD / SARE training procedure, loaded from YAML."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..losses import KERNELS, LOSS_NAMES
from ..models.config import ModelConfig


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal[LOSS_NAMES] = "sare_joint"  # type: ignore[valid-type]
    kernel: Literal[KERNELS] = "gaussian"  # type: ignore[valid-type]
    margin: float | None = Field(None, gt=0, description="triplet (default 0.1) / contrastive (default 0.7)")
    temperature: float | None = Field(None, gt=0, allow_inf_nan=False, description="SARE only: the kernel "
                                      "sees d^2 / temperature (default 1, the paper's loss)")

    @model_validator(mode="after")
    def _parameters_only_where_used(self) -> LossConfig:
        if self.margin is not None and self.name.startswith("sare"):
            raise ValueError(f"margin is not used by {self.name}")
        if self.temperature is not None and not self.name.startswith("sare"):
            raise ValueError(f"temperature is not used by {self.name}")
        return self


class TrainConfig(BaseModel):
    """A training run. Distances in metres come from the dataset (10 m positives, 25 m negatives)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("sare", description="run name: its directory under storage_path")
    storage_path: str = Field("runs", description="local folder or s3://bucket/prefix for checkpoints")
    dataset: str = Field(description="manifest / dbStruct / folder with train, val (and test) splits")
    eval_dataset: str | None = Field(None, description="another source for the val/test splits (e.g. GLDv2)")
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = "test"
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()

    num_workers: int = Field(2, ge=1, description="DDP workers: one per GPU, or CPU workers")
    use_gpu: bool | None = Field(None, description="None: use GPUs when the cluster has them")
    cpus_per_worker: float = Field(1, gt=0)

    epochs: int = Field(5, ge=1)
    chunk_size: int = Field(1000, ge=1, description="training queries between two re-minings")
    negative_pool: int = Field(1000, ge=1, description="fresh random negatives per query and chunk")
    num_negatives: int = Field(10, ge=1, description="hardest negatives per tuple")
    batch_size: int = Field(4, ge=1, description="tuples per worker and step")
    max_train_queries: int | None = Field(None, ge=1, description="cap on training queries per epoch")
    max_val_queries: int | None = Field(None, ge=1)
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-3, ge=0)
    lr_step_epochs: int = Field(5, ge=1, description="the learning rate is multiplied by lr_gamma this often")
    lr_gamma: float = Field(0.5, gt=0)
    lr_warmup_steps: int = Field(
        0, ge=0, description="the first epoch's first this many steps (per worker) ramp the learning rate "
        "linearly up to lr (step k of them uses lr x k / lr_warmup_steps, k from 1); 0: none. The first "
        "steps from a pretrained model, with momentum still building up, are where a run is most likely to "
        "lose what the model knew")
    max_grad_norm: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="before each step the gradient (all trainable parameters "
        "as one vector, after DDP's averaging) is scaled down to this L2 norm when it is longer; None: never. "
        "Epoch rows report the norms either way (grad_norm_median, grad_norm_max, clipped_steps)")
    freeze_batchnorm: bool = Field(
        True, description="trainable BatchNorm layers keep normalising with their pretrained running statistics "
        "(their scale/shift still train); batch statistics of a few tuples per worker are too noisy")
    color_jitter: float = Field(0.0, ge=0, le=1, description="strength of colour jitter on training queries")
    frozen_cache_mb: int = Field(
        2048, ge=0, description="per worker: MiB of frozen-layer feature maps kept per image, so that the layers "
        "before train_from run once per image and run (sare_core.models.frozen_cache); 0: off. Needs a fixed "
        "model.image_size; colour-jittered queries always run through every layer")
    channels_last: bool = Field(
        True, description="train the model in channels-last memory format. On CPUs a training step then takes "
        "about 0.76 of a channels-first one (the depthwise convolutions' backward pass; benchmarks/"
        "train_step_layout.py); on GPUs cuDNN usually prefers it as well, not measured here. Descriptors move "
        "by float rounding only")
    frozen_cache_shared: bool = Field(
        True, description="DDP workers hand each other the frozen-layer maps they compute while re-mining and "
        "validating (all-gathers), so that a worker's training steps find the images another worker embedded; "
        "only while every worker has room in frozen_cache_mb for all it lacks, after which each keeps what it "
        "computes (copies would shrink what the caches hold between them). Off: a worker caches only what it "
        "computed itself. Turn it off where moving maps between nodes costs more than computing them")
    balance_by_speed: bool = Field(
        False, description="re-mining shares weighted by each worker's timed pace, so that a slower worker gets "
        "less (sare_core.training.collective). Off by default: the shares then depend on nothing measured, so "
        "a rerun on the same host reproduces every descriptor and tuple; on, they follow timings, and which "
        "worker embeds an image moves descriptors by float rounding. For clusters of unequal nodes")
    max_nonfinite_steps: int = Field(20, ge=0, description="steps with a non-finite loss tolerated per run")

    val_ns: list[int] = Field(default_factory=lambda: [1, 5, 10, 20])
    select_n: int = Field(5, ge=1, description="best epoch = highest validation Recall@select_n")
    val_store_dir: str | None = Field(
        None, description="folder (local or s3://) for each epoch's validation descriptors as a Parquet "
        "store, epoch_{NNN} (000 = off-the-shelf); the reported validation recall is then computed from "
        "that store by sare_core.evaluation.store_search.score_stores, exactly as `sare eval` scores it")
    centroid_images: int = Field(500, ge=1, description="training images sampled for NetVLAD k-means")
    centroid_descriptors_per_image: int = Field(100, ge=1)
    whitening_images: int | None = Field(None, ge=2, description="training database images for PCA (None: all)")
    extract_batch_size: int = Field(32, ge=1)
    max_failures: int = Field(2, ge=0, description="worker failures survived (restart from last checkpoint)")
    pid_dir: str | None = Field(None, description="write each worker's PID here, and a line 'rank pid epoch "
                                "run_dir' to epochs.log as each epoch is reported (fault-injection tests, ops)")
    inject_nonfinite: list[tuple[int, int, int]] = Field(
        default_factory=list, description="fault injection (tests): (rank, epoch, step) triples whose training "
        "loss is made NaN on that worker; the step is skipped on every worker and counted")
    mining_log_dir: str | None = Field(
        None, description="local folder: rank 0 writes every chunk's negative pools and mined tuples there as "
        "epoch{E:03d}_chunk{C:03d}.npz (sare_core.mining.load_mining_record), to audit the mining")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.select_n not in self.val_ns:
            raise ValueError(f"select_n={self.select_n} must be one of val_ns={self.val_ns}")
        return self
