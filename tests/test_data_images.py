"""Image folders: PNG/JPEG files in class sub-folders, in memory or streamed,
and every failure mode (empty folder, empty class, corrupt files)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

import kerastrain
from kerastrain import DataError
from kerastrain.config import DataConfig
from kerastrain.data.images import ImageStream
from kerastrain.data.prepare import prepare_data
from kerastrain.data.sources import load_data

#: Explanations are tested in test_explain.py; these runs skip them.
NOEXPLAIN = {"explain": "none"}


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """scikit-learn digits 0, 1 and 2 as 8x8 grayscale PNGs, one folder per class."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    root = tmp_path_factory.mktemp("digits_png")
    names = {0: "zero", 1: "one", 2: "two"}
    keep = np.flatnonzero(bunch.target < 3)
    for i in keep:
        folder = root / names[bunch.target[i]]
        folder.mkdir(exist_ok=True)
        Image.fromarray((bunch.images[i] * 15).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root, (bunch.images[keep] * 15).astype(np.uint8), bunch.target[keep]


@pytest.mark.slow
def test_folder_trains_through_fit_pipeline_with_classes_from_folder_names(digit_folder, tmp_path):
    root, images, labels = digit_folder
    result = kerastrain.fit_pipeline(
        str(root),
        "cnn",
        seed=0,
        output_dir=str(tmp_path / "run"),
        train={"epochs": 6, "verbose": 0, "early_stopping": None},
        model_options={"filters": 8, "dense": 32},
        export={"formats": ["savedmodel"]},
        report=NOEXPLAIN,
    )
    assert result.metrics["test"]["accuracy"] > 0.85
    assert result.metrics["savedmodel"]["max_abs_diff"] < 1e-4
    summary = result.report_path.read_text()
    assert "zero" in summary and "two" in summary
    loaded = load_data(str(root), DataConfig())
    # Classes are the sorted folder names; files are read in sorted order.
    assert loaded.class_names == ["one", "two", "zero"]
    assert loaded.x.dtype == np.uint8 and loaded.x.shape == (len(labels), 8, 8, 1)
    order = np.argsort(
        [
            {"one": 0, "two": 1, "zero": 2}[n] * 10000 + i
            for n, i in zip([["zero", "one", "two"][t] for t in labels], range(len(labels)))
        ],
        kind="stable",
    )
    np.testing.assert_array_equal(loaded.x[..., 0], images[order])


@pytest.mark.slow
def test_streamed_folder_reads_the_same_pixels_and_trains(digit_folder, tmp_path):
    root, _, _ = digit_folder
    in_memory = load_data(str(root), DataConfig())
    options = DataConfig(in_memory_mb=0, augment=["translation"])
    prepared = prepare_data(str(root), options, seed=0)
    assert isinstance(prepared.x, ImageStream)
    rows = np.array([5, 0, 300, 17])
    np.testing.assert_array_equal(prepared.rows(rows), in_memory.x[rows])
    result = kerastrain.fit_pipeline(
        str(root),
        "cnn",
        seed=0,
        output_dir=str(tmp_path / "run"),
        data_options={"in_memory_mb": 0},
        train={"epochs": 4, "verbose": 0, "early_stopping": None},
        model_options={"filters": 8, "dense": 32},
        export={"formats": []},
        report=NOEXPLAIN,
    )
    assert result.metrics["test"]["accuracy"] > 0.8
    assert "streamed" in result.report_path.read_text()


def test_jpeg_and_png_of_mixed_sizes_and_modes_are_resized(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for cls, size in (("a", (20, 30)), ("b", (16, 16))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.jpg", quality=95)
            Image.fromarray(pixels[..., 0]).save(tmp_path / cls / f"{i}.PNG")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        loaded = load_data(str(tmp_path), DataConfig(image_size=[12, 10], channels=3))
    assert loaded.x.shape == (12, 12, 10, 3)
    assert "ignored 1 files that are not images" in caplog.text and "notes.txt" in caplog.text
    gray = load_data(str(tmp_path), DataConfig(image_size=[12, 10], channels=1))
    assert gray.x.shape == (12, 12, 10, 1)


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"has no class sub-folders \(it is empty\)"):
        load_data(str(tmp_path), DataConfig())


def test_a_class_without_images_is_refused_by_path(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "cat" / "1.png")
    (tmp_path / "dog" / "readme.md").write_text("empty")
    with pytest.raises(DataError, match=r"class folder '.*dog' holds no image"):
        load_data(str(tmp_path), DataConfig())


@pytest.mark.parametrize("in_memory_mb", [1024, 0])
def test_corrupt_images_are_reported_by_path_never_skipped(tmp_path, in_memory_mb):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(tmp_path / "cat" / f"{i}.png")
        Image.fromarray(np.full((6, 6), 9 * i, np.uint8)).save(tmp_path / "dog" / f"{i}.png")
    good = (tmp_path / "dog" / "0.png").read_bytes()
    (tmp_path / "dog" / "1.png").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "cat" / "2.png").write_text("this is not a picture")
    with pytest.raises(DataError, match=r"2 image files cannot be decoded") as info:
        load_data(str(tmp_path), DataConfig(in_memory_mb=in_memory_mb))
    assert str(tmp_path / "dog" / "1.png") in str(info.value)
    assert str(tmp_path / "cat" / "2.png") in str(info.value)
