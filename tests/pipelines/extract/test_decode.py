"""The torch-free decode tasks of the extraction."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.extract.decode import binary_column, decode_images
from sare_core.models.images import load_rgb, resized_uint8
from sare_core.models.preprocessing import Preprocessor


@pytest.mark.parametrize("image_size, max_side", [((48, 64), None), (None, 100), (None, 2000), (None, None)])
def test_torch_free_decoding_gives_the_preprocessors_pixels(toy_street_images, image_size, max_side):
    """The decode tasks decode and resize without torch; the pixels must be the preprocessor's."""
    prep = Preprocessor("tiny", image_size, max_side)
    for path in toy_street_images[::4]:
        expected = prep.to_uint8(load_rgb(str(path)))
        np.testing.assert_array_equal(resized_uint8(load_rgb(str(path)), image_size, max_side), expected)
    rows = pa.table({"id": ["a"], "path": [str(toy_street_images[0])]})
    out = decode_images(rows, image_size, max_side)
    h, w = out.column("height")[0].as_py(), out.column("width")[0].as_py()
    pixels = np.frombuffer(out.column("pixels")[0].as_py(), np.uint8).reshape(h, w, 3)
    np.testing.assert_array_equal(pixels, prep.to_uint8(load_rgb(str(toy_street_images[0]))))


def test_a_block_of_images_and_failures_travels_as_one_pixel_buffer(toy_street_images, tmp_path):
    """Decoded images, a missing file and a corrupt one: each image's bytes in place, the failures empty. The
    pixels live in numpy's memory (the C allocator's, which `keep_freed_memory` keeps between blocks), not in
    Arrow's pool, whose fresh pages a list-of-bytes column would take."""
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    paths = [str(toy_street_images[0]), str(tmp_path / "missing.jpg"), str(corrupt), str(toy_street_images[1])]
    size = (240, 320)
    image_bytes = size[0] * size[1] * 3
    before = pa.total_allocated_bytes()
    out = decode_images(pa.table({"id": list("abcd"), "path": paths}), size, None)
    assert pa.total_allocated_bytes() - before < image_bytes // 2  # the pixels (2 images) are not in the pool
    column = out.column("pixels").combine_chunks()
    assert column.type == pa.large_binary()
    assert [e[:7] for e in out.column("error").to_pylist()] == ["", "missing", "decode:", ""]
    assert [len(v) for v in column.to_pylist()] == [image_bytes, 0, 0, image_bytes]
    for row, path in ((0, paths[0]), (3, paths[3])):
        pixels = np.frombuffer(column[row].as_buffer(), np.uint8).reshape(*size, 3)
        np.testing.assert_array_equal(pixels, resized_uint8(load_rgb(path), size, None))
    assert binary_column([]).to_pylist() == []


def test_decode_and_write_workers_do_not_import_torch():
    code = "import sys, pipelines.extract.decode; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3]).returncode == 0
