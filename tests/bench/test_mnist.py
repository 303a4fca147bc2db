"""The MNIST readers (IDX and CSV), the protocol's query split, the PNG export, and the shipped files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.mnist import DEFAULT_ROOT, Digits, export, load_test, load_train, query_split, read_csv, read_idx


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("compressed", [True, False])
def test_read_idx_gives_the_declared_type_and_shape(tmp_path: Path, compressed: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(images, 0x08)
    path = tmp_path / "images.idx"
    path.write_bytes(gzip.compress(data) if compressed else data)
    np.testing.assert_array_equal(read_idx(path), images)
    wide = np.array([-5, 70000], dtype=np.int32)
    (tmp_path / "ints.idx").write_bytes(idx_bytes(wide, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "ints.idx"), wide)


def test_read_idx_refuses_wrong_files(tmp_path: Path) -> None:
    short = tmp_path / "short.idx"
    short.write_bytes(idx_bytes(np.zeros((2, 2), dtype=np.uint8), 0x08)[:-1])
    with pytest.raises(ValueError, match="holds 3 bytes"):
        read_idx(short)
    text = tmp_path / "text.idx"
    text.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(text)
    with pytest.raises(FileNotFoundError, match="shared/datasets/mnist"):
        read_idx(tmp_path / "absent.idx")


def test_read_csv_splits_pixels_and_label(tmp_path: Path) -> None:
    rows = [[*([7] * 784), 3], [*([255] * 784), 9]]
    path = tmp_path / "digits.csv.gz"
    path.write_bytes(gzip.compress("\n".join(",".join(map(str, row)) for row in rows).encode()))
    digits = read_csv(path)
    assert digits.images.shape == (2, 28, 28) and digits.images.dtype == np.uint8
    assert digits.images[0, 5, 5] == 7 and digits.images[1, 27, 27] == 255
    np.testing.assert_array_equal(digits.labels, [3, 9])
    path.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(ValueError, match="expected 785 columns"):
        read_csv(path)


def test_query_split_takes_the_first_of_each_class() -> None:
    labels = np.array([0, 1, 0, 1, 0, 2, 2, 1])
    queries, database = query_split(labels, per_class=2)
    np.testing.assert_array_equal(queries, [0, 1, 2, 3, 5, 6])
    np.testing.assert_array_equal(database, [4, 7])


def test_export_writes_one_folder_per_digit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    digits = Digits(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([4, 1, 4]))
    assert export(digits, tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "4"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "4" / "00002.png")), digits.images[2])


def test_the_shipped_files_follow_the_protocol() -> None:
    if not DEFAULT_ROOT.is_dir():
        pytest.fail(f"MNIST is missing at {DEFAULT_ROOT}; tests need ../shared beside the checkout")
    train, test = load_train(), load_test()
    assert train.images.shape == (5000, 28, 28) and np.bincount(train.labels).tolist() == [500] * 10
    assert test.images.shape == (10000, 28, 28) and test.labels.max() == 9
    queries, database = query_split(test.labels, 100)
    assert len(queries) == 1000 and len(database) == 9000
    assert np.bincount(test.labels[queries]).tolist() == [100] * 10
