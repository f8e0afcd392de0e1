"""The model step of an extraction: the class Ray Data runs in its actor pool (see also `decode`).

`ImageEmbedder(model, ...)(rows)` turns decoded rows (pixels, height, width, error) into embedded rows
(descriptor: float32 list; zeros where error != ""), carrying every row's id and other columns through,
so nothing downstream depends on row order. It imports no Ray (it gets its model from an object reference
it is handed), so it runs the same in a plain loop.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from sare_core.models.embedding import EmbeddingModel
from sare_core.models.io import model_from_payload, model_hash

from .decode import ROW_COLUMNS, error_text

log = logging.getLogger(__name__)


def select_device(use_gpu: bool) -> torch.device:
    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("extraction asked for a GPU, but torch sees no CUDA device in this worker")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class ImageEmbedder:
    """Runs the model on decoded rows: (rows with pixels) -> (rows with descriptor), in one process.

    model: an `EmbeddingModel`, or a payload dict from `sare_core.models.io.model_payload`, or a Ray object
    reference to such a payload (resolved here, once per actor). expected_hash: checked against the loaded
    model, so every actor provably runs the model the store's metadata names. threads: torch CPU threads.
    On a GPU: uint8 pixels go to the device and are normalised there, the model runs in channels-last
    memory format under `torch.autocast` (float16) when `mixed_precision`, and descriptors are
    re-normalised in float32. On the CPU: float32 throughout, `threads` torch threads.
    Rows are grouped by image size (images of one size form one batch); a batch the model fails on is
    retried image by image, and an image that still fails gets an error instead of a descriptor. With
    `truncate` K, descriptors keep their first K elements, re-L2-normalised.
    """

    def __init__(self, model, expected_hash: str | None = None, *, batch_size: int = 32, use_gpu: bool = False,
                 mixed_precision: bool = True, channels_last: bool = True, threads: int | None = None,
                 truncate: int | None = None):
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        if not isinstance(model, (EmbeddingModel, dict)):
            import ray  # only a Ray object reference gets here

            model = ray.get(model)
        if isinstance(model, dict):
            model = model_from_payload(model, source="extraction model")
        if expected_hash is not None and model_hash(model) != expected_hash:
            raise RuntimeError(f"the model given to the extraction worker has hash {model_hash(model)}, "
                               f"expected {expected_hash}")
        self.device = select_device(use_gpu)
        self.preprocessor = model.preprocessor
        if truncate is not None and not 1 <= truncate <= model.descriptor_dim:
            raise ValueError(f"truncate: {truncate} is not between 1 and the model's {model.descriptor_dim} dims")
        self.truncate = truncate
        self.dim = truncate or model.descriptor_dim
        self.batch_size = max(1, int(batch_size))
        self.mixed_precision = bool(mixed_precision) and self.device.type == "cuda"
        self.channels_last = bool(channels_last) and self.device.type == "cuda"
        model = model.eval().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, D) float32 L2-normalised descriptors."""
        x = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = self.preprocessor.normalize_uint8(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.mixed_precision:
            with torch.autocast(device_type=self.device.type, dtype=torch.float16):
                out = self.model(x)
            out = F.normalize(out.float(), p=2, dim=1)
        else:
            out = self.model(x)
        if self.truncate is not None:
            out = F.normalize(out.float()[:, : self.truncate], p=2, dim=1)
        return out.float().cpu().numpy()

    def _embed_group(self, pixels: np.ndarray, descriptors: np.ndarray, rows: list[int], errors: list[str]):
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            try:
                descriptors[chunk] = self.embed(pixels[start:start + len(chunk)])
                continue
            except Exception as error:  # noqa: BLE001 - retried image by image below
                if len(chunk) == 1:
                    errors[chunk[0]] = error_text("model", error)
                    continue
                log.warning("model failed on a batch of %d images (%s); retrying them one by one", len(chunk), error)
            for j, row in enumerate(chunk):
                try:
                    descriptors[row] = self.embed(pixels[start + j:start + j + 1])[0]
                except Exception as error:  # noqa: BLE001 - recorded as this image's failure
                    errors[row] = error_text("model", error)

    def __call__(self, rows: pa.Table) -> pa.Table:
        n = rows.num_rows
        errors = rows.column("error").to_pylist()
        heights = rows.column("height").to_numpy()
        widths = rows.column("width").to_numpy()
        pixel_column = rows.column("pixels")
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in range(n):
            if not errors[i]:
                groups[(int(heights[i]), int(widths[i]))].append(i)
        descriptors = np.zeros((n, self.dim), np.float32)
        for (h, w), members in groups.items():
            pixels = np.empty((len(members), h, w, 3), np.uint8)
            for j, i in enumerate(members):
                pixels[j] = np.frombuffer(pixel_column[i].as_buffer(), np.uint8).reshape(h, w, 3)
            self._embed_group(pixels, descriptors, members, errors)
        values = pa.array(descriptors.reshape(-1), pa.float32())
        return (rows.select(list(ROW_COLUMNS))
                .append_column("error", pa.array(errors, pa.string()))
                .append_column("descriptor", pa.FixedSizeListArray.from_arrays(values, self.dim)))
