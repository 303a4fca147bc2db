"""Saving and loading: round trip, checked load, clear errors for bad files, and atomic replacement."""

from __future__ import annotations

import gc
import json
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

import index.store as store
from index import (
    FORMAT_VERSION,
    IndexFileError,
    IndexMismatchError,
    IndexSpec,
    VectorIndex,
    VectorIndexError,
)
from tests.helpers.vectors import DIM, FINGERPRINT, unit_vectors

Filled = tuple[VectorIndex, np.ndarray, np.ndarray]


@pytest.fixture
def saved(filled: Filled, tmp_path: Path) -> tuple[Path, VectorIndex, np.ndarray]:
    index, _, vectors = filled
    path = tmp_path / "data" / "index.faiss"  # parent does not exist yet: save() creates it
    index.save(path)
    return path, index, vectors


def _header(path: Path) -> dict[str, object]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<I", raw[8:12])
    header: dict[str, object] = json.loads(raw[12 : 12 + length])
    return header


def _rewrite_header(path: Path, **changes: object) -> None:
    raw = path.read_bytes()
    (length,) = struct.unpack("<I", raw[8:12])
    header = json.loads(raw[12 : 12 + length]) | changes
    new = json.dumps(header).encode()
    path.write_bytes(raw[:8] + struct.pack("<I", len(new)) + new + raw[12 + length :])


# ---------------------------------------------------------------------- round trip


def test_save_load_round_trip_gives_identical_results(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, original, vectors = saved
    loaded = VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)
    assert (loaded.dim, loaded.fingerprint, loaded.description) == (DIM, FINGERPRINT, "Flat")
    assert len(loaded) == len(original)
    np.testing.assert_array_equal(loaded.ids(), original.ids())
    s1, i1 = original.search(vectors, k=10)
    s2, i2 = loaded.search(vectors, k=10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)


def test_loaded_index_is_fully_usable(
    saved: tuple[Path, VectorIndex, np.ndarray], rng: np.random.Generator
) -> None:
    path, original, _ = saved
    loaded = VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)
    gc.collect()  # a FAISS object owned by a collected temporary would now be freed memory
    some_id = int(original.ids()[0])
    assert some_id in loaded
    with pytest.raises(ValueError, match="already in the index"):
        loaded.add(np.array([some_id]), unit_vectors(rng, 1))
    np.testing.assert_array_equal(loaded.reconstruct(some_id), original.reconstruct(some_id))
    assert loaded.remove([some_id]) == 1
    new = unit_vectors(rng, 1)
    loaded.add(np.array([7]), new)
    assert loaded.search(new, k=1)[1][0, 0] == 7


def test_save_and_load_empty_index(empty_index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "empty.faiss"
    empty_index.save(path)
    loaded = VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)
    assert len(loaded) == 0


def test_save_overwrites_and_header_describes_the_index(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, index, _ = saved
    index.remove(index.ids()[:50])
    index.save(path)
    header = _header(path)
    assert path.read_bytes()[:8] == store.MAGIC
    assert header["format_version"] == FORMAT_VERSION
    assert (header["dim"], header["fingerprint"], header["ntotal"]) == (DIM, FINGERPRINT, 150)
    assert len(VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)) == 150


def test_save_keeps_an_existing_files_permissions(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, index, _ = saved
    assert path.stat().st_mode & 0o777 == 0o644, "not mkstemp's 0600"
    path.chmod(0o640)
    index.save(path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_open_or_create(tmp_path: Path, filled: Filled) -> None:
    path = tmp_path / "index.faiss"
    fresh = VectorIndex.open_or_create(path, dim=DIM, fingerprint=FINGERPRINT)
    assert len(fresh) == 0 and not path.exists(), "nothing is written until save()"
    filled[0].save(path)
    hnsw = IndexSpec("hnsw", hnsw_m=16, ef_construction=40, ef_search=32)
    reopened = VectorIndex.open_or_create(path, dim=DIM, fingerprint=FINGERPRINT, spec=hnsw)
    assert len(reopened) == 200 and reopened.description == "Flat", "an existing file wins"
    with pytest.raises(IndexMismatchError):
        VectorIndex.open_or_create(path, dim=DIM, fingerprint="other")


# ---------------------------------------------------------------------- mismatch


def test_wrong_fingerprint_raises_mismatch_naming_both_and_the_fix(
    saved: tuple[Path, VectorIndex, np.ndarray],
) -> None:
    path, _, _ = saved
    with pytest.raises(IndexMismatchError) as info:
        VectorIndex.load(path, dim=DIM, fingerprint="resnet50:gem:v2")
    message = str(info.value)
    assert str(path) in message
    assert repr(FINGERPRINT) in message and "'resnet50:gem:v2'" in message
    assert "`cbir reindex`" in message
    assert info.value.stored_fingerprint == FINGERPRINT
    assert info.value.expected_fingerprint == "resnet50:gem:v2"
    assert isinstance(info.value, VectorIndexError) and isinstance(info.value, RuntimeError)


def test_wrong_dim_raises_mismatch(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, _, _ = saved
    with pytest.raises(IndexMismatchError, match=rf"\(dim {DIM}\).*\(dim 512\).*cbir reindex") as info:
        VectorIndex.load(path, dim=512, fingerprint=FINGERPRINT)
    assert (info.value.stored_dim, info.value.expected_dim) == (DIM, 512)


def test_mismatch_message_matches_the_documented_wording() -> None:
    error = IndexMismatchError(
        Path("data/index.faiss"),
        stored_fingerprint="A",
        stored_dim=1280,
        expected_fingerprint="B",
        expected_dim=512,
    )
    assert str(error) == (
        "index at data/index.faiss was built by encoder 'A' (dim 1280); the service is configured with "
        "encoder 'B' (dim 512): run `cbir reindex` to re-embed the collection with the configured encoder, "
        "or configure the encoder the index was built with"
    )


# ---------------------------------------------------------------------- bad files


def _assert_file_error(path: Path, match: str) -> None:
    with pytest.raises(IndexFileError, match=match) as info:
        VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)
    assert str(path) in str(info.value) and "`cbir index-build`" in str(info.value)
    assert info.value.path == path


@pytest.mark.parametrize("keep", [0, 4, 10, 40, -1, -100])
def test_truncated_file_raises_file_error(saved: tuple[Path, VectorIndex, np.ndarray], keep: int) -> None:
    path, _, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    _assert_file_error(path, "truncated")


def test_garbage_file_raises_file_error(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    path.write_bytes(b"this is not an index at all" * 100)
    _assert_file_error(path, "not a cbir vector index")


def test_raw_faiss_file_is_not_accepted(tmp_path: Path, filled: Filled) -> None:
    import faiss

    path = tmp_path / "index.faiss"
    faiss.write_index(filled[0]._index, str(path))
    _assert_file_error(path, "not a cbir vector index")


def test_flipped_payload_byte_is_caught_by_the_checksum(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, _, _ = saved
    raw = bytearray(path.read_bytes())
    raw[-500] ^= 0xFF
    path.write_bytes(bytes(raw))
    _assert_file_error(path, "checksum")


def test_trailing_bytes_are_rejected(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, _, _ = saved
    path.write_bytes(path.read_bytes() + b"\0")
    _assert_file_error(path, "unexpected bytes")


def test_corrupt_header_json(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, _, _ = saved
    raw = bytearray(path.read_bytes())
    raw[12] = ord("#")
    path.write_bytes(bytes(raw))
    _assert_file_error(path, "unreadable header")


def test_other_format_version_is_refused(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, _, _ = saved
    _rewrite_header(path, format_version=FORMAT_VERSION + 1)
    _assert_file_error(path, f"format version {FORMAT_VERSION + 1}")


def test_header_with_wrong_field_type_is_refused(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, _, _ = saved
    _rewrite_header(path, ntotal="200")
    _assert_file_error(path, "header field 'ntotal'")


def test_stored_ntotal_must_match_the_index(saved: tuple[Path, VectorIndex, np.ndarray]) -> None:
    path, _, _ = saved
    _rewrite_header(path, ntotal=199)
    _assert_file_error(path, "header says 199 vectors, the index holds 200")


def test_payload_faiss_cannot_read_is_a_file_error(tmp_path: Path) -> None:
    """A consistent container around a bad payload (e.g. written by a buggy tool) must not reach FAISS raw."""
    import zlib

    path = tmp_path / "index.faiss"
    payload = b"garbage!" * 10
    header = {
        "format_version": FORMAT_VERSION,
        "dim": DIM,
        "fingerprint": FINGERPRINT,
        "description": "Flat",
        "ntotal": 0,
        "payload_nbytes": len(payload),
        "payload_crc32": zlib.crc32(payload),
    }
    raw_header = json.dumps(header).encode()
    path.write_bytes(store.MAGIC + struct.pack("<I", len(raw_header)) + raw_header + payload)
    _assert_file_error(path, "FAISS cannot read it")


def test_missing_file_and_directory_are_file_errors(tmp_path: Path) -> None:
    _assert_file_error(tmp_path / "nope.faiss", "does not exist")
    _assert_file_error(tmp_path, "cannot be read")


# ---------------------------------------------------------------------- atomicity


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_failing_replace_keeps_the_old_file_and_removes_the_temp_file(
    saved: tuple[Path, VectorIndex, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, index, _ = saved
    before = path.read_bytes()
    index.remove(index.ids()[:10])

    def boom(src: object, dst: object) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        index.save(path)
    assert path.read_bytes() == before
    assert _leftovers(path.parent) == []
    monkeypatch.undo()
    assert len(VectorIndex.load(path, dim=DIM, fingerprint=FINGERPRINT)) == 200


def test_failure_midway_through_writing_keeps_the_old_file(
    saved: tuple[Path, VectorIndex, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file is partially written when the failure happens, like a full disk or a kill."""
    path, index, _ = saved
    before = path.read_bytes()
    real_fsync = os.fsync
    seen: list[int] = []

    def fsync_then_fail(fd: int) -> None:
        seen.append(os.fstat(fd).st_size)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync_then_fail)
    with pytest.raises(OSError, match="No space left"):
        index.save(path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert seen and seen[0] > 0, "the failure hit after bytes were written"
    assert path.read_bytes() == before
    assert _leftovers(path.parent) == []


def test_keyboard_interrupt_during_write_removes_the_temp_file(
    tmp_path: Path, filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the middle of a large save is a BaseException, not an Exception: it must clean up too."""
    path = tmp_path / "index.faiss"
    real_write = store._atomic_write

    def interrupted(target: Path, chunks: Iterable[bytes | memoryview]) -> None:
        def some_then_interrupt() -> Iterator[bytes | memoryview]:
            yield from list(chunks)[:3]
            raise KeyboardInterrupt

        real_write(target, some_then_interrupt())

    monkeypatch.setattr(store, "_atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        filled[0].save(path)
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_temp_file_lives_in_the_target_directory(
    tmp_path: Path, filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same directory means same filesystem, which is what makes os.replace an atomic rename."""
    path = tmp_path / "sub" / "index.faiss"
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        calls.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    filled[0].save(path)
    assert len(calls) == 1
    assert Path(calls[0][0]).parent == path.parent and Path(calls[0][1]) == path
