"""The three steps of an extraction, as the functions and class Ray Data runs on batches of rows.

Each takes and returns a `pyarrow.Table` and carries every row's id (and the row's other columns) through,
so nothing downstream depends on row order. They import no Ray (the embedding actor gets its model from an
object reference it is handed), so they run the same in a plain loop.

    decode_images(rows)          CPU tasks: read + decode + resize -> pixels (uint8 bytes), height, width,
                                 error ("" when fine; else why the image could not be read)
    ImageEmbedder(...)(rows)     actor: pixels -> descriptor (float32 list; zeros where error != "")
    write_parts(rows)            tasks: one descriptor part and at most one failure part per call,
                                 returning one small row per part written (PartInfo fields)
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from PIL import Image

from sare_core.models import EmbeddingModel, Preprocessor, model_hash
from sare_core.models.io import model_from_payload
from sare_core.store import PartWriter, StoreMetadata

log = logging.getLogger(__name__)

ROW_COLUMNS = ("id", "path", "role", "split", "utm_east", "utm_north", "label")
MAX_ERROR_CHARS = 500

PART_SCHEMA = pa.schema([
    pa.field("name", pa.string()),
    pa.field("kind", pa.string()),
    pa.field("num_rows", pa.int64()),
    pa.field("size_bytes", pa.int64()),
    pa.field("rows_by_role_split", pa.string()),  # JSON {role: {split: rows}}
    pa.field("task_id", pa.string()),
    pa.field("seconds", pa.float64()),  # time the writer spent on this part
])


def _error_text(stage: str, error: BaseException) -> str:
    text = f"{stage}: {type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def read_image(path: str) -> Image.Image:
    """Decode the image at `path` (local file or fsspec URI such as s3://...) fully, as RGB.

    Local files go through `sare_core.models.load_rgb`, the same call a plain loop makes, so pixels are
    identical; remote ones are fetched whole and decoded from memory.
    """
    if "://" not in path:
        from sare_core.models import load_rgb

        return load_rgb(path)
    import fsspec

    with fsspec.open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.convert("RGB")


def decode_images(rows: pa.Table, preprocessor: Preprocessor) -> pa.Table:
    """Add pixels (binary: the resized (H, W, 3) uint8 image, row-major), height, width and error columns.

    A missing, truncated or corrupt image gets empty pixels, height = width = 0 and an error text; it never
    raises, so one bad file does not fail its batch.
    """
    paths = rows.column("path").to_pylist()
    pixels: list[bytes] = []
    heights = np.zeros(len(paths), np.int32)
    widths = np.zeros(len(paths), np.int32)
    errors: list[str] = []
    for i, path in enumerate(paths):
        try:
            array = preprocessor.to_uint8(read_image(path))
            if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
                raise ValueError(f"decoded to an empty or non-RGB array of shape {array.shape}")
        except FileNotFoundError as error:
            pixels.append(b"")
            errors.append(_error_text("missing", error))
            continue
        except Exception as error:  # noqa: BLE001 - PIL raises many types for corrupt files
            pixels.append(b"")
            errors.append(_error_text("decode", error))
            continue
        heights[i], widths[i] = array.shape[:2]
        pixels.append(array.tobytes())
        errors.append("")
    base = rows.select([c for c in ROW_COLUMNS if c in rows.column_names])
    return (base.append_column("pixels", pa.array(pixels, pa.binary()))
            .append_column("height", pa.array(heights))
            .append_column("width", pa.array(widths))
            .append_column("error", pa.array(errors, pa.string())))


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
    retried image by image, and an image that still fails gets an error instead of a descriptor.
    """

    def __init__(self, model, expected_hash: str | None = None, *, batch_size: int = 32, use_gpu: bool = False,
                 mixed_precision: bool = True, channels_last: bool = True, threads: int | None = None):
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
        self.dim = model.descriptor_dim
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
        return out.float().cpu().numpy()

    def _embed_group(self, pixels: np.ndarray, descriptors: np.ndarray, rows: list[int], errors: list[str]):
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            try:
                descriptors[chunk] = self.embed(pixels[start:start + len(chunk)])
                continue
            except Exception as error:  # noqa: BLE001 - retried image by image below
                if len(chunk) == 1:
                    errors[chunk[0]] = _error_text("model", error)
                    continue
                log.warning("model failed on a batch of %d images (%s); retrying them one by one", len(chunk), error)
            for j, row in enumerate(chunk):
                try:
                    descriptors[row] = self.embed(pixels[start + j:start + j + 1])[0]
                except Exception as error:  # noqa: BLE001 - recorded as this image's failure
                    errors[row] = _error_text("model", error)

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


def write_parts(rows: pa.Table, uri: str, metadata: StoreMetadata, task_id: str,
                storage_options: dict | None = None) -> pa.Table:
    """Write `rows` (embedded rows) to the store at `uri`: one descriptor part for the rows without an
    error and one failure part (id, path, error) for the others. Returns one `PART_SCHEMA` row per part
    written; the parts stay invisible to readers until the driver commits them."""
    start = time.perf_counter()
    writer = PartWriter(uri, metadata, task_id=task_id, storage_options=storage_options)
    error = rows.column("error")
    failed = pc.not_equal(error, "")
    good = rows.filter(pc.invert(failed))
    bad = rows.filter(failed)
    if good.num_rows:
        descriptors = good.column("descriptor").combine_chunks()
        values = descriptors.flatten().to_numpy(zero_copy_only=False).reshape(good.num_rows, metadata.dim)
        utm = np.column_stack([good.column("utm_east").to_numpy(), good.column("utm_north").to_numpy()])
        writer.write(ids=good.column("id").to_pylist(), roles=good.column("role").to_pylist(),
                     descriptors=values, splits=good.column("split").to_pylist(), utm=utm,
                     labels=good.column("label").to_numpy())
    if bad.num_rows:
        writer.write_failures(bad.column("id").to_pylist(), bad.column("path").to_pylist(),
                              bad.column("error").to_pylist())
    seconds = time.perf_counter() - start
    return pa.Table.from_pylist([
        {"name": p.name, "kind": p.kind, "num_rows": p.num_rows, "size_bytes": p.size_bytes,
         "rows_by_role_split": json.dumps(p.rows_by_role_split), "task_id": p.task_id, "seconds": seconds}
        for p in writer.parts], schema=PART_SCHEMA)
