"""Writes past the page cache: exact bytes, the buffered fallback, and failures that surface."""

from __future__ import annotations

import errno
import mmap
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import qilin.direct_io as dio
from qilin.direct_io import DirectFile, direct_io_available, open_large_write

pytestmark = pytest.mark.skipif(not direct_io_available(), reason="no O_DIRECT here")
PAGE = mmap.PAGESIZE


def _pieces(rng: np.random.Generator, total: int) -> list[bytes]:
    """``total`` random bytes cut at random places (some pieces empty, some > a chunk)."""
    data = rng.integers(0, 256, total, dtype=np.uint8).tobytes()
    cuts = np.sort(rng.integers(0, total + 1, 12))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


@pytest.mark.parametrize("total", [0, 1, PAGE - 1, 2 * PAGE, 2 * PAGE + 1, 7 * PAGE + 123])
def test_direct_file_holds_exactly_the_bytes_it_was_given(tmp_path, total):
    rng = np.random.default_rng(total)
    pieces = _pieces(rng, total)
    path = tmp_path / "f.bin"
    with DirectFile(path, chunk_bytes=2 * PAGE) as fh:
        for piece in pieces:
            assert fh.write(piece) == len(piece)
        assert fh.tell() == total
    assert path.read_bytes() == b"".join(pieces)


def test_direct_file_accepts_numpy_and_memoryview_input(tmp_path):
    a = np.arange(3 * PAGE, dtype=np.float32)
    with DirectFile(tmp_path / "a.bin", chunk_bytes=PAGE) as fh:
        fh.write(a)
        fh.write(memoryview(a.tobytes())[:10])
    assert (tmp_path / "a.bin").read_bytes() == a.tobytes() + a.tobytes()[:10]


def test_parquet_written_through_it_is_byte_identical_to_a_plain_write(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table({"x": rng.standard_normal(300_000).astype(np.float32),
                      "s": pa.array(np.repeat(["a", "b", "c"], 100_000))})
    pq.write_table(table, tmp_path / "plain.parquet", compression="lz4")
    with open_large_write(tmp_path / "direct.parquet") as fh:
        assert isinstance(fh, DirectFile)
        pq.write_table(table, fh, compression="lz4")
    assert (tmp_path / "direct.parquet").read_bytes() == \
        (tmp_path / "plain.parquet").read_bytes()


def test_it_falls_back_to_a_buffered_file_where_o_direct_is_refused(tmp_path, monkeypatch):
    def refuse(path, chunk_bytes=dio.CHUNK_BYTES):
        raise OSError(errno.EINVAL, "Invalid argument", str(path))

    monkeypatch.setattr(dio, "DirectFile", refuse)
    with open_large_write(tmp_path / "b.bin") as fh:
        assert not isinstance(fh, DirectFile)
        fh.write(b"xyz")
    assert (tmp_path / "b.bin").read_bytes() == b"xyz"
    with open_large_write(tmp_path / "c.bin", direct=False) as fh:
        fh.write(b"abc")
    assert (tmp_path / "c.bin").read_bytes() == b"abc"


def test_without_o_direct_on_the_platform_it_writes_buffered(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_DIRECT")
    assert not direct_io_available()
    with open_large_write(tmp_path / "d.bin") as fh:
        fh.write(b"abc")
    assert (tmp_path / "d.bin").read_bytes() == b"abc"


def test_other_open_errors_are_not_hidden(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_large_write(tmp_path / "no" / "such" / "folder.bin")


def test_a_refused_direct_write_continues_through_the_cache(tmp_path, monkeypatch):
    real = dio._write_all
    refused = []

    def refuse_first_direct_write(fd, view):
        if not refused:
            refused.append(True)
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, view)

    monkeypatch.setattr(dio, "_write_all", refuse_first_direct_write)
    data = bytes(range(256)) * (5 * PAGE // 256) + b"end"
    with DirectFile(tmp_path / "e.bin", chunk_bytes=PAGE) as fh:
        fh.write(data)
    assert refused and (tmp_path / "e.bin").read_bytes() == data


def test_a_full_disk_surfaces_as_oserror_and_the_file_is_closed(tmp_path, monkeypatch):
    def disk_full(fd, view):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dio, "_write_all", disk_full)
    fh = DirectFile(tmp_path / "f.bin", chunk_bytes=PAGE)
    fd = fh._fd
    with pytest.raises(OSError, match="No space left"):
        fh.write(b"\0" * (3 * PAGE))  # the second full chunk waits for the failed first
    with pytest.raises(OSError, match="No space left"):
        fh.close()
    assert fh.closed
    with pytest.raises(OSError):
        os.fstat(fd)


def test_chunk_size_must_be_whole_pages(tmp_path):
    with pytest.raises(ValueError, match="multiple"):
        DirectFile(tmp_path / "g.bin", chunk_bytes=PAGE + 1)
    assert not (tmp_path / "g.bin").exists()
