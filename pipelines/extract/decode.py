"""The extraction's CPU steps that need no torch: reading and resizing images, and writing store parts.

Ray Data runs these in plain tasks. This module imports only PIL, numpy, pyarrow, the store and the
torch-free `sare_core.models.images` (the same decode and resize the model's `Preprocessor` uses), so the
worker processes that run decode and write tasks start in a fraction of a second and stay small: importing
torch costs a new worker about 3 CPU-seconds and 300 MB, which on a 2-core machine was most of the
pipeline's overhead.

    decode_images(rows, image_size, max_side)  -> rows + pixels (uint8 bytes, one buffer), height, width, error
    write_parts(rows, uri, metadata, task_id)   -> one PART_SCHEMA row per part written
    write_parts_to_stores(rows, stores, task_id) -> the same for several models' stores, with a store column
"""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sare_core.allocator import keep_freed_memory
from sare_core.models.images import load_rgb, resized_uint8
from sare_core.store import PartWriter, StoreMetadata

ROW_COLUMNS = ("id", "path", "role", "split", "utm_east", "utm_north", "label")
# A several-model extraction over stores that lack different images adds STORE_MASK to its rows: bit i set
# when store i lacks the row's image (see `write_parts`). Decode and model steps carry it through.
STORE_MASK = "store_mask"
CARRIED_COLUMNS = (*ROW_COLUMNS, STORE_MASK)
MAX_ERROR_CHARS = 500

PART_SCHEMA = pa.schema([
    pa.field("name", pa.string()),
    pa.field("kind", pa.string()),
    pa.field("num_rows", pa.int64()),
    pa.field("size_bytes", pa.int64()),
    pa.field("rows_by_role_split", pa.string()),  # JSON {role: {split: rows}}
    pa.field("task_id", pa.string()),
    pa.field("seconds", pa.float64()),  # time the writer spent on this call
])


def descriptor_column(index: int) -> str:
    """The column that model `index` of a several-model extraction fills: "descriptor", "descriptor_1", ..."""
    return "descriptor" if index == 0 else f"descriptor_{index}"


def error_column(index: int) -> str:
    """Model `index`'s error column ("" where it has a descriptor): "error", "error_1", ..."""
    return "error" if index == 0 else f"error_{index}"


def error_text(stage: str, error: BaseException) -> str:
    """'<stage>: <Type>: <message>', at most MAX_ERROR_CHARS characters."""
    text = f"{stage}: {type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


_NO_PIXELS = np.zeros(0, np.uint8)


def binary_column(values: list[np.ndarray]) -> pa.Array:
    """A large_binary array whose i-th value is the bytes of the 1-D uint8 array values[i]. The bytes are
    copied once, into one numpy buffer that the Arrow array wraps (a list of bytes objects would be copied
    twice, the second time into Arrow's own memory pool); numpy's memory comes from the C allocator, which
    keeps freed memory for the next block (`keep_freed_memory`)."""
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum([v.size for v in values], out=offsets[1:])
    data = np.concatenate(values) if values else _NO_PIXELS
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(values),
                                            [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def decode_images(rows: pa.Table, image_size=None, max_side=None) -> pa.Table:
    """Add pixels (large_binary: the resized (H, W, 3) uint8 image, row-major), height, width and error columns.

    image_size / max_side: the model's resize settings (ModelConfig). A missing, truncated or corrupt image
    gets empty pixels, height = width = 0 and an error text; it never raises, so one bad file does not
    fail its batch.
    """
    keep_freed_memory()  # once per process: decoded images (0.9 MiB each at 480x640) reuse freed memory
    paths = rows.column("path").to_pylist()
    pixels: list[np.ndarray] = []
    heights = np.zeros(len(paths), np.int32)
    widths = np.zeros(len(paths), np.int32)
    errors: list[str] = []
    for i, path in enumerate(paths):
        try:
            array = resized_uint8(load_rgb(path), image_size, max_side)
            if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
                raise ValueError(f"decoded to an empty or non-RGB array of shape {array.shape}")
        except FileNotFoundError as error:
            pixels.append(_NO_PIXELS)
            errors.append(error_text("missing", error))
            continue
        except Exception as error:  # noqa: BLE001 - PIL raises many types for corrupt files
            pixels.append(_NO_PIXELS)
            errors.append(error_text("decode", error))
            continue
        heights[i], widths[i] = array.shape[:2]
        pixels.append(array.reshape(-1))
        errors.append("")
    base = rows.select([c for c in CARRIED_COLUMNS if c in rows.column_names])
    return (base.append_column("pixels", binary_column(pixels))
            .append_column("height", pa.array(heights))
            .append_column("width", pa.array(widths))
            .append_column("error", pa.array(errors, pa.string())))


def write_parts(rows: pa.Table, uri: str, metadata: StoreMetadata, task_id: str,
                storage_options: dict | None = None, column: str = "descriptor", error: str = "error",
                mask_bit: int | None = None) -> pa.Table:
    """Write `rows` (embedded rows: ROW_COLUMNS, `error`, `column`) to the store at `uri`: one descriptor
    part for the rows without an error and one failure part (id, path, error) for the others. With
    `mask_bit` b, only the rows whose STORE_MASK has bit b set (the images this store lacks). Returns one
    `PART_SCHEMA` row per part written; the parts stay invisible to readers until the driver commits."""
    start = time.perf_counter()
    if mask_bit is not None and STORE_MASK in rows.column_names:
        wanted = pc.not_equal(pc.bit_wise_and(rows.column(STORE_MASK), pa.scalar(1 << mask_bit, pa.int64())), 0)
        rows = rows.filter(wanted)
    writer = PartWriter(uri, metadata, task_id=task_id, storage_options=storage_options)
    failed = pc.not_equal(rows.column(error), "")
    good = rows.filter(pc.invert(failed))
    bad = rows.filter(failed)
    if good.num_rows:
        descriptors = good.column(column).combine_chunks()
        values = descriptors.flatten().to_numpy(zero_copy_only=False).reshape(good.num_rows, metadata.dim)
        utm = np.column_stack([good.column("utm_east").to_numpy(), good.column("utm_north").to_numpy()])
        writer.write(ids=good.column("id").to_pylist(), roles=good.column("role").to_pylist(),
                     descriptors=values, splits=good.column("split").to_pylist(), utm=utm,
                     labels=good.column("label").to_numpy())
    if bad.num_rows:
        writer.write_failures(bad.column("id").to_pylist(), bad.column("path").to_pylist(),
                              bad.column(error).to_pylist())
    seconds = time.perf_counter() - start
    return pa.Table.from_pylist([
        {"name": p.name, "kind": p.kind, "num_rows": p.num_rows, "size_bytes": p.size_bytes,
         "rows_by_role_split": json.dumps(p.rows_by_role_split), "task_id": p.task_id, "seconds": seconds}
        for p in writer.parts], schema=PART_SCHEMA)


IMAGES_ROW = "images"  # the kind of the row `write_parts_to_stores` adds: how many images the call got


def write_parts_to_stores(rows: pa.Table, stores: list[dict], task_id: str,
                          storage_options: dict | None = None) -> pa.Table:
    """`write_parts` once per store of a (several-model) extraction; store i gets model i's columns and, when
    the rows carry STORE_MASK, only the rows with bit i. stores[i]: {"uri", "metadata"}. Returns the
    PART_SCHEMA rows of every store's parts with a "store" column (i), plus one row of kind IMAGES_ROW
    (store -1) whose num_rows is the number of images the call got."""
    tables = [pa.Table.from_pylist([{"name": "", "kind": IMAGES_ROW, "num_rows": rows.num_rows, "size_bytes": 0,
                                     "rows_by_role_split": "{}", "task_id": task_id, "seconds": 0.0}],
                                   schema=PART_SCHEMA).append_column("store", pa.array([-1], pa.int32()))]
    for i, store in enumerate(stores):
        written = write_parts(rows, store["uri"], store["metadata"], task_id, storage_options, descriptor_column(i),
                              error_column(i), i)
        tables.append(written.append_column("store", pa.array([i] * written.num_rows, pa.int32())))
    return pa.concat_tables(tables)
