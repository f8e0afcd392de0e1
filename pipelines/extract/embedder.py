"""The model step of an extraction: the class Ray Data runs in its actor pool (see also `decode`).

`ImageEmbedder(model, ...)(rows)` turns decoded rows (pixels, height, width, error) into embedded rows
(descriptor: float32 list; zeros where error != ""; with several models, one column per model), carrying
every row's id and other columns through, so nothing downstream depends on row order. It imports no Ray
(it gets its models from object references it is handed), so it runs the same in a plain loop.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from sare_core.allocator import keep_freed_memory
from sare_core.models.embedding import EmbeddingModel
from sare_core.models.io import model_from_payload, model_hash
from sare_core.models.shared_prefix import group_by_frozen_prefix

from .decode import CARRIED_COLUMNS, descriptor_column, error_column, error_text

log = logging.getLogger(__name__)


def select_device(use_gpu: bool) -> torch.device:
    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("extraction asked for a GPU, but torch sees no CUDA device in this worker")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# float16, not bfloat16: with NetVLAD kept in float32 (its weak clusters underflow float16) float16's longer
# mantissa gives descriptors closer to float32 at the same speed on an H200 (VGG16-NetVLAD64 at 480x640: cosine
# 0.999999 against bfloat16's 0.99995; EfficientNet-Lite0 under bfloat16 fell to 0.996;
# results/gpu_device_2026-12-04_run2). Activations stay far below float16's 65504.
AUTOCAST_DTYPE = torch.float16


def _resolve(model):
    """An `EmbeddingModel` from a model, a payload dict, or a Ray object reference to a payload."""
    if not isinstance(model, (EmbeddingModel, dict)):
        import ray  # only a Ray object reference gets here

        model = ray.get(model)
    if isinstance(model, dict):
        model = model_from_payload(model, source="extraction model")
    return model


class ImageEmbedder:
    """Runs one model, or several on the same images, on decoded rows: (rows with pixels) -> (rows with
    descriptors), in one process.

    model: an `EmbeddingModel`, a payload dict from `sare_core.models.io.model_payload` or a Ray object
    reference to such a payload (resolved here, once per actor); or a list of those. expected_hash: one
    hash, or a list, checked against the loaded models, so that every actor provably runs the models the
    stores' metadata name. Model i fills the columns `descriptor_column(i)` and `error_column(i)`. Several
    models must resize images alike (they share the decoded pixels); models whose frozen prefixes are equal
    (`sare_core.models.shared_prefix`) run that prefix once per batch, which on the CPU gives the same
    descriptors to the bit as running each model whole. threads: torch CPU threads.
    On a GPU: uint8 pixels go to the device and are normalised there, the model runs in channels-last
    memory format under `torch.autocast` (float16) when `mixed_precision`, NetVLAD itself in float32, and
    descriptors are re-normalised in float32. With `compile_model`, models whose images have a fixed size
    run `torch.compile`d (one static graph per batch shape: usually a job's full decode blocks and its last
    one); with `max_side` (a size per aspect ratio) and models sharing a frozen prefix they run eager.
    Within one call, batch k+1 is prepared and queued before batch k's descriptors, copied back
    asynchronously, are waited for. On the CPU: float32 throughout, `threads` torch threads.
    Rows are grouped by image size (images of one size form one batch); a batch the models fail on is
    retried image by image and model by model, so an image one model fails on gets an error in that model's
    column only. With `truncate` K, descriptors keep their first K elements, re-L2-normalised.
    """

    def __init__(self, model, expected_hash=None, *, batch_size: int = 32, use_gpu: bool = False,
                 mixed_precision: bool = True, channels_last: bool = True, compile_model: bool = False,
                 threads: int | None = None, truncate: int | None = None):
        keep_freed_memory()  # each batch's activations reuse the last one's memory (sare_core.allocator)
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        models = [_resolve(m) for m in (model if isinstance(model, (list, tuple)) else [model])]
        hashes = expected_hash if isinstance(expected_hash, (list, tuple)) else [expected_hash] * len(models)
        if len(hashes) != len(models):
            raise ValueError(f"{len(models)} models but {len(hashes)} expected hashes")
        for i, (m, expected) in enumerate(zip(models, hashes)):
            if expected is not None and model_hash(m) != expected:
                raise RuntimeError(f"model {i} given to the extraction worker has hash {model_hash(m)}, "
                                   f"expected {expected}")
        self.preprocessor = models[0].preprocessor
        for i, m in enumerate(models[1:], start=1):
            if m.preprocessor != self.preprocessor:
                raise ValueError(f"model {i} preprocesses images as {m.preprocessor}, model 0 as "
                                 f"{self.preprocessor}: models extracted together must share their decoded pixels")
        self.device = select_device(use_gpu)
        for i, m in enumerate(models):
            if truncate is not None and not 1 <= truncate <= m.descriptor_dim:
                raise ValueError(f"truncate: {truncate} is not between 1 and model {i}'s {m.descriptor_dim} dims")
        self.truncate = truncate
        self.dims = [truncate or m.descriptor_dim for m in models]
        self.batch_size = max(1, int(batch_size))
        self.mixed_precision = bool(mixed_precision) and self.device.type == "cuda"
        self.channels_last = bool(channels_last) and self.device.type == "cuda"
        self.models = []
        for m in models:
            m = m.eval().to(self.device)
            if self.channels_last:
                m = m.to(memory_format=torch.channels_last)
            self.models.append(m)
        self.groups = group_by_frozen_prefix(self.models) if len(self.models) > 1 else [[0]]
        # Compiled on the GPU only (a CPU build would need a C++ compiler in every worker) and for a fixed image
        # size only: dynamic=False makes one static graph per batch shape (8-12 s each on an H200; torch stops
        # compiling new ones after 8 and runs those eager), and images capped at max_side come in as many
        # sizes as aspect ratios. Padding short batches instead would cost more: GPU plans hand the actor
        # blocks of ~36 images at 480x640 with batches of up to 128.
        self.compile_model = (bool(compile_model) and self.device.type == "cuda"
                              and self.preprocessor.image_size is not None)
        self.runners = [torch.compile(m, dynamic=False) if self.compile_model else m for m in self.models]

    @property
    def model(self) -> EmbeddingModel:
        """The first model."""
        return self.models[0]

    @property
    def dim(self) -> int:
        """The first model's descriptor size."""
        return self.dims[0]

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        """(B, D) model output -> (B, D_i) float32 L2-normalised descriptors, still on the device."""
        if self.mixed_precision:
            out = F.normalize(out.float(), p=2, dim=1)
        if self.truncate is not None:
            out = F.normalize(out.float()[:, : self.truncate], p=2, dim=1)
        return out.float()

    def _run_compiled(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Model `index` on `x`, compiled where asked. When the compiled model fails and the eager one does not
        (no compiler or Triton on this node, say), compilation is turned off for this worker with a warning
        rather than failing every batch; when both fail, the eager model's error is the batch's."""
        if self.runners[index] is self.models[index]:
            return self.models[index](x)
        try:
            return self.runners[index](x)
        except torch.cuda.OutOfMemoryError:
            raise  # the batch's failure (retried image by image), not the compiler's
        except Exception as error:  # noqa: BLE001 - torch.compile's failures have no common type
            out = self.models[index](x)
            log.warning("torch.compile failed (%s: %s); this worker runs its models eager", type(error).__name__,
                        str(error)[:300])
            self.runners = list(self.models)
            return out

    def _input(self, pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = self.preprocessor.normalize_uint8(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.inference_mode()
    def _launch(self, pixels: np.ndarray) -> tuple[list[torch.Tensor], torch.cuda.Event | None]:
        """Queue every model on (B, H, W, 3) uint8 `pixels`: per model, (B, D_i) descriptors in host memory,
        which on a GPU are still being copied there until the returned event completes (`_collect`)."""
        x = self._input(pixels)
        out: list[torch.Tensor | None] = [None] * len(self.models)
        with torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPE, enabled=self.mixed_precision):
            for group in self.groups:
                if len(group) == 1:
                    out[group[0]] = self._finish(self._run_compiled(group[0], x))
                    continue
                maps = self.models[group[0]].backbone.frozen(x)
                for k, i in enumerate(group):  # a copy for all but the last: a suffix may work in place
                    shared = maps if k == len(group) - 1 else maps.clone()
                    out[i] = self._finish(self.models[i](shared, from_frozen=True))
        if self.device.type != "cuda":
            return out, None
        copies = [t.to("cpu", non_blocking=True) for t in out]  # into pinned memory, asynchronously
        done = torch.cuda.Event()
        done.record()
        return copies, done

    @staticmethod
    def _collect(launched: tuple[list[torch.Tensor], torch.cuda.Event | None]) -> list[np.ndarray]:
        """Wait for `_launch`'s copies; per model, (B, D_i) float32 L2-normalised descriptors."""
        copies, done = launched
        if done is not None:
            done.synchronize()
        return [t.numpy() for t in copies]

    def embed_all(self, pixels: np.ndarray) -> list[np.ndarray]:
        """(B, H, W, 3) uint8 -> per model, (B, D_i) float32 L2-normalised descriptors."""
        return self._collect(self._launch(pixels))

    @torch.inference_mode()
    def embed_one_model(self, index: int, pixels: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, D) descriptors of model `index` alone (no prefix shared)."""
        with torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPE, enabled=self.mixed_precision):
            return self._finish(self.models[index](self._input(pixels))).cpu().numpy()  # eager: the retry path

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, D) float32 L2-normalised descriptors of the first model."""
        return self.embed_all(pixels)[0]

    def _embed_group(self, pixels: np.ndarray, descriptors: list[np.ndarray], rows: list[int],
                     errors: list[list[str]]):
        """Embed `pixels` (the images of `rows`) with every model into `descriptors`; errors[i][row] gets
        model i's error text for an image it fails on. Batch k+1 is queued before batch k's descriptors are
        collected, so on a GPU the host prepares one batch while the device computes the other."""
        pending = None  # (start, chunk, launched) of the batch queued last

        def collect(start: int, chunk: list[int], launched) -> None:
            try:
                for target, values in zip(descriptors, self._collect(launched)):
                    target[chunk] = values
            except Exception as error:  # noqa: BLE001 - retried image by image and model by model
                self._retry_one_by_one(pixels, start, chunk, descriptors, errors, error)

        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            try:
                launched = self._launch(pixels[start:start + len(chunk)])
            except Exception as error:  # noqa: BLE001 - retried image by image and model by model
                self._retry_one_by_one(pixels, start, chunk, descriptors, errors, error)
                continue
            if pending is not None:
                collect(*pending)
            pending = (start, chunk, launched)
        if pending is not None:
            collect(*pending)

    def _retry_one_by_one(self, pixels: np.ndarray, start: int, chunk: list[int], descriptors: list[np.ndarray],
                          errors: list[list[str]], error: Exception) -> None:
        log.warning("a model failed on a batch of %d images (%s); retrying them one by one", len(chunk), error)
        for j, row in enumerate(chunk):
            for i, target in enumerate(descriptors):
                try:
                    target[row] = self.embed_one_model(i, pixels[start + j:start + j + 1])[0]
                except Exception as failure:  # noqa: BLE001 - recorded as this image's failure in model i
                    errors[i][row] = error_text("model", failure)

    def __call__(self, rows: pa.Table) -> pa.Table:
        n = rows.num_rows
        decoded = rows.column("error").to_pylist()
        heights = rows.column("height").to_numpy()
        widths = rows.column("width").to_numpy()
        pixel_column = rows.column("pixels")
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in range(n):
            if not decoded[i]:
                groups[(int(heights[i]), int(widths[i]))].append(i)
        descriptors = [np.zeros((n, dim), np.float32) for dim in self.dims]
        errors = [list(decoded) for _ in self.models]  # a decode error is every model's
        for (h, w), members in groups.items():
            pixels = np.empty((len(members), h, w, 3), np.uint8)
            for j, i in enumerate(members):
                pixels[j] = np.frombuffer(pixel_column[i].as_buffer(), np.uint8).reshape(h, w, 3)
            self._embed_group(pixels, descriptors, members, errors)
        out = rows.select([c for c in CARRIED_COLUMNS if c in rows.column_names])
        for i, (values, dim) in enumerate(zip(descriptors, self.dims)):
            flat = pa.array(values.reshape(-1), pa.float32())
            out = (out.append_column(error_column(i), pa.array(errors[i], pa.string()))
                   .append_column(descriptor_column(i), pa.FixedSizeListArray.from_arrays(flat, dim)))
        return out
