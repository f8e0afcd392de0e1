"""check_images on the real toy street photos plus missing, non-image and truncated files."""

from __future__ import annotations

import shutil

import pytest

from sare_core.data import check_images
from sare_core.data.image_check import list_images


def test_real_photos_pass(toy_street_images):
    report = check_images(toy_street_images)
    assert report.ok and report.checked == 22 and "all 22 images" in report.summary()
    assert check_images(toy_street_images, decode=True).ok
    report.raise_if_bad()


def test_missing_and_unreadable_are_listed_in_order(tmp_path, toy_street_images):
    good = toy_street_images[:3]
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    missing = [str(tmp_path / f"gone{i}.jpg") for i in range(7)]
    report = check_images([*good, missing[0], text, *missing[1:]])
    assert not report.ok
    assert report.missing == missing
    assert [p for p, _ in report.unreadable] == [str(text)]
    summary = report.summary(max_paths=2)
    assert "8 of 11 images are bad" in summary and "7 missing (first: " + missing[0] in summary
    assert missing[2] not in summary and "..." in summary and "1 unreadable" in summary
    with pytest.raises(ValueError, match="7 missing"):
        report.raise_if_bad()


def test_truncated_jpeg_needs_a_full_decode(tmp_path, toy_street_images):
    src = toy_street_images[0]
    truncated = tmp_path / "truncated.jpg"
    data = src.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    assert check_images([truncated]).ok  # the header is intact: the fast check passes
    report = check_images([truncated], decode=True)
    assert [p for p, _ in report.unreadable] == [str(truncated)]
    assert "truncated" in report.unreadable[0][1].lower()


def test_truncated_png_fails_the_header_check(tmp_path, shared_data):
    src = shared_data / "nordland_dev" / "summer" / "images-00180.png"
    shutil.copy(src, tmp_path / "ok.png")
    data = src.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 20])  # loses the IEND chunk
    report = check_images([tmp_path / "ok.png", tmp_path / "cut.png"])
    assert [p for p, _ in report.unreadable] == [str(tmp_path / "cut.png")]


def test_list_images(tmp_path, toy_street_images):
    (tmp_path / "sub").mkdir()
    for name in ("b.JPG", "a.png", "sub/c.jpeg", "readme.txt"):
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path) == ["a.png", "b.JPG", "sub/c.jpeg"]
    assert list_images(tmp_path, recursive=False) == ["a.png", "b.JPG"]
    assert check_images([]).ok
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")
