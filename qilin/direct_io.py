"""Large sequential writes that bypass the page cache (``O_DIRECT``), buffered where not.

A streamed factor dataset is many gigabytes written once. Through the page cache, the
kernel throttles a writer to the rate at which it flushes dirty pages, which on some
machines is far below the disk's: on the 2-core test machine, 8 GB through the cache with
a final ``fdatasync`` went at 0.30 GB/s, the same bytes with ``O_DIRECT`` at 1.2 GB/s, and a
Parquet partition writer slowed from 1.7 s to 3.7 s per 835 MB file once about 2 GB were
dirty (see ``benchmarks/RESULTS.md``, W6). :class:`DirectFile` is a binary file object for
such writes: it gathers what it is given in page-aligned 16 MiB buffers and writes each
full buffer with ``O_DIRECT`` from a background thread while the caller fills the next; the
tail (under one buffer) is written through the cache, so the file has exactly the bytes it
was given. :func:`open_large_write` opens one, or a plain buffered file where the platform
or file system has no ``O_DIRECT`` (macOS, Windows, some network file systems).

Examples
--------
>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> with open_large_write(os.path.join(d, "x.bin")) as fh:
...     _ = fh.write(b"a" * 5_000_000)
...     _ = fh.write(b"tail")
>>> os.path.getsize(os.path.join(d, "x.bin"))
5000004
"""

from __future__ import annotations

import errno
import io
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

#: Bytes per direct write (a multiple of every block size a device uses).
CHUNK_BYTES = 16 * 2**20
#: errno values with which ``open(O_DIRECT)`` or a direct write says "not here".
_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


class DirectFile(io.RawIOBase):
    """A write-only binary file whose full chunks go to disk with ``O_DIRECT``.

    Parameters
    ----------
    path : path
        The file to create (truncated if it exists), with the mode ``open()`` would give.
    chunk_bytes : int
        Bytes per direct write, a multiple of the page size.

    Raises
    ------
    OSError
        When the file cannot be opened with ``O_DIRECT`` (see :func:`open_large_write` for
        the fallback), or a write fails (e.g. the disk is full).

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "y.bin")
    >>> fh = DirectFile(p, chunk_bytes=mmap.PAGESIZE)
    >>> fh.write(b"0123456789" * 1000), fh.tell()
    (10000, 10000)
    >>> fh.close()
    >>> open(p, "rb").read() == b"0123456789" * 1000
    True
    """

    def __init__(self, path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> None:
        super().__init__()
        if chunk_bytes <= 0 or chunk_bytes % mmap.PAGESIZE:
            raise ValueError(f"chunk_bytes must be a positive multiple of {mmap.PAGESIZE}")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
        self._chunk = chunk_bytes
        # two page-aligned buffers: one is written to disk while the other fills
        self._buffers = [mmap.mmap(-1, chunk_bytes) for _ in range(2)]
        self._views = [memoryview(b) for b in self._buffers]
        self._current = 0
        self._fill = 0
        self._position = 0
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="qilin-direct-write")
        self._pending: Future[None] | None = None

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def write(self, data: Any) -> int:
        """Append ``data`` (any bytes-like object); returns its length in bytes."""
        if self.closed:
            raise ValueError("write to a closed file")
        src = memoryview(data).cast("B")
        n, i = len(src), 0
        while i < n:
            view = self._views[self._current]
            k = min(self._chunk - self._fill, n - i)
            view[self._fill:self._fill + k] = src[i:i + k]
            self._fill += k
            i += k
            if self._fill == self._chunk:
                self._hand_over_full_chunk()
        self._position += n
        return n

    def _hand_over_full_chunk(self) -> None:
        self._wait_for_pending()
        self._pending = self._flusher.submit(_write_direct, self._fd,
                                             self._views[self._current])
        self._current = 1 - self._current
        self._fill = 0

    def _wait_for_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Write what is left (through the cache) and close; safe to call twice."""
        if self.closed:
            return
        try:
            self._wait_for_pending()
            if self._fill:
                _stop_direct(self._fd)
                with self._views[self._current][:self._fill] as tail:
                    _write_all(self._fd, tail)
                self._fill = 0
        finally:
            self._flusher.shutdown(wait=True)
            os.close(self._fd)
            for view, buffer in zip(self._views, self._buffers, strict=True):
                view.release()
                buffer.close()
            super().close()


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def _write_direct(fd: int, view: memoryview) -> None:
    """Write an aligned chunk; where the file system refuses direct writes, go buffered."""
    try:
        _write_all(fd, view)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        _stop_direct(fd)
        _write_all(fd, view)


def _stop_direct(fd: int) -> None:
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)


def direct_io_available() -> bool:
    """Whether this platform has ``O_DIRECT`` at all (Linux and most Unixes; not macOS)."""
    return hasattr(os, "O_DIRECT")


def open_large_write(path: str | os.PathLike[str], direct: bool = True) -> IO[bytes]:
    """A binary file for one large sequential write: :class:`DirectFile` where possible.

    Parameters
    ----------
    path : path
        The file to create or truncate.
    direct : bool
        Try ``O_DIRECT`` (default); False always gives a plain buffered file.

    Returns
    -------
    file object
        :class:`DirectFile`, or ``open(path, "wb")`` when ``direct`` is False, the platform
        has no ``O_DIRECT``, or the file system refuses it.
    """
    if direct and direct_io_available():
        try:
            return DirectFile(path)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
    return open(path, "wb")
