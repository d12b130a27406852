"""Array backend: NumPy on CPU or CuPy on GPU, chosen once and asked everywhere.

Other modules never test for a GPU themselves. They either ask for a :class:`Backend`
(``get_backend("auto" | "cpu" | "gpu")``) and use its ``xp`` namespace, or they call
:func:`array_module` on an array they were given, or they wrap a compiled CPU kernel and
a GPU kernel in a :class:`DeviceKernel` that dispatches on the array type.

Examples
--------
>>> import numpy as np
>>> be = get_backend("cpu")
>>> be.name, be.xp is np
('cpu', True)
>>> array_module(np.zeros(3)) is np
True
>>> be.to_host(be.asarray([1.0, 2.0])).tolist()
[1.0, 2.0]
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from qilin.errors import BackendError

log = logging.getLogger(__name__)

BackendName = Literal["auto", "cpu", "gpu"]
_VALID = ("auto", "cpu", "gpu")


@functools.cache
def _cupy() -> ModuleType | None:
    """Return the ``cupy`` module when it imports and a CUDA device is present."""
    try:
        import cupy  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def gpu_available() -> bool:
    """Return True when CuPy imports and at least one CUDA device is visible.

    Examples
    --------
    >>> isinstance(gpu_available(), bool)
    True
    """
    return _cupy() is not None


def gpu_count() -> int:
    """Number of visible CUDA devices (0 without CuPy or a GPU)."""
    cp = _cupy()
    return 0 if cp is None else int(cp.cuda.runtime.getDeviceCount())


def gpu_names() -> list[str]:
    """Names of the visible CUDA devices, e.g. ``['NVIDIA H100 80GB HBM3']``."""
    cp = _cupy()
    if cp is None:
        return []
    names = []
    for i in range(gpu_count()):
        props = cp.cuda.runtime.getDeviceProperties(i)
        name = props["name"]
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


@dataclass(frozen=True)
class Backend:
    """One array namespace and the means to move arrays onto and off it.

    Parameters
    ----------
    name : {"cpu", "gpu"}
        Which device the arrays live on.
    xp : module
        ``numpy`` or ``cupy``.
    """

    name: Literal["cpu", "gpu"]
    xp: ModuleType

    @property
    def is_gpu(self) -> bool:
        """True for the CuPy backend."""
        return self.name == "gpu"

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Return ``x`` as an array of this backend (copying across devices if needed)."""
        if self.is_gpu:
            return self.xp.asarray(x, dtype=dtype)
        return np.asarray(to_host(x), dtype=dtype)

    def to_host(self, x: Any) -> np.ndarray:
        """Return ``x`` as a NumPy array (a no-op for NumPy input)."""
        return to_host(x)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU); use before reading a timer."""
        if self.is_gpu:
            self.xp.cuda.Stream.null.synchronize()

    def describe(self) -> str:
        """One line naming the backend and device, for logs and ``qilin info``."""
        if self.is_gpu:
            return f"gpu (CuPy {self.xp.__version__}, {', '.join(gpu_names())})"
        return f"cpu (NumPy {np.__version__})"


CPU = Backend("cpu", np)
_fallback_reported = False


def get_backend(kind: BackendName | Backend | None = "auto") -> Backend:
    """Resolve a backend request.

    Parameters
    ----------
    kind : {"auto", "cpu", "gpu"}, Backend or None
        ``auto`` picks the GPU when one is usable and otherwise falls back to CPU, logging
        the fallback once per process. ``gpu`` without a usable GPU raises. ``None`` means
        the ``QILIN_BACKEND`` environment variable, or ``auto``.

    Raises
    ------
    BackendError
        For an unknown name, or ``gpu`` when CuPy or a CUDA device is missing.

    Examples
    --------
    >>> get_backend("cpu").name
    'cpu'
    >>> get_backend("tpu")
    Traceback (most recent call last):
    ...
    qilin.errors.BackendError: unknown backend 'tpu': expected one of auto, cpu, gpu
    """
    global _fallback_reported
    if isinstance(kind, Backend):
        return kind
    if kind is None:
        kind = os.environ.get("QILIN_BACKEND", "auto")  # type: ignore[assignment]
    if kind not in _VALID:
        raise BackendError(f"unknown backend {kind!r}: expected one of {', '.join(_VALID)}")
    if kind == "cpu":
        return CPU
    cp = _cupy()
    if cp is not None:
        return Backend("gpu", cp)
    if kind == "gpu":
        raise BackendError(
            "backend 'gpu' was requested but no GPU is usable: CuPy is not installed or no "
            "CUDA device is visible (install qilin[gpu] on a machine with an NVIDIA GPU, "
            "or use backend='cpu'/'auto')"
        )
    if not _fallback_reported:
        log.info("qilin backend 'auto': no usable GPU (CuPy/CUDA), running on CPU")
        _fallback_reported = True
    return CPU


def is_gpu_array(x: Any) -> bool:
    """True when ``x`` is a CuPy array (checked without importing CuPy)."""
    return type(x).__module__.startswith("cupy")


def array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    Mixing devices is an error rather than a silent copy.
    """
    kinds = {is_gpu_array(a) for a in arrays if hasattr(a, "shape")}
    if kinds == {True}:
        cp = _cupy()
        if cp is None:  # pragma: no cover - a CuPy array implies CuPy imports
            raise BackendError("received a CuPy array but CuPy is not usable")
        return cp
    if len(kinds) > 1:
        raise BackendError("arrays on different devices (NumPy and CuPy) were mixed")
    return np


def backend_of(*arrays: Any) -> Backend:
    """The :class:`Backend` that owns the given arrays."""
    xp = array_module(*arrays)
    return CPU if xp is np else Backend("gpu", xp)


def to_host(x: Any) -> np.ndarray:
    """Copy a CuPy array to host memory; NumPy arrays and scalars pass through."""
    if is_gpu_array(x):
        return x.get()
    return np.asarray(x)


class DeviceKernel:
    """A compiled kernel with one implementation per device, dispatched on array type.

    Parameters
    ----------
    name : str
        Name used in error messages.
    cpu : callable
        Implementation for NumPy arrays (typically a numba ``*_nb`` function wrapper).
    gpu : callable, optional
        Implementation for CuPy arrays. When missing, CuPy input is an error.

    Examples
    --------
    >>> import numpy as np
    >>> double = DeviceKernel("double", cpu=lambda a: a * 2)
    >>> double(np.arange(3)).tolist()
    [0, 2, 4]
    """

    def __init__(self, name: str, cpu: Callable[..., Any], gpu: Callable[..., Any] | None = None):
        self.name = name
        self.cpu = cpu
        self.gpu = gpu

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        arrays = [a for a in (*args, *kwargs.values()) if hasattr(a, "shape")]
        if arrays and array_module(*arrays) is not np:
            if self.gpu is None:
                raise BackendError(f"kernel {self.name!r} has no GPU implementation")
            return self.gpu(*args, **kwargs)
        return self.cpu(*args, **kwargs)


@contextlib.contextmanager
def numba_threads(n: int | None) -> Iterator[None]:
    """Run numba ``parallel=True`` kernels of this thread with ``n`` threads (None: as is).

    Dask workers already use every core; nested kernel thread pools would oversubscribe
    them (on a busy machine a small kernel call then costs milliseconds instead of
    microseconds).
    """
    keep_numba_thread_config()
    if n is None:
        yield
        return
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def keep_numba_thread_config() -> None:
    """Let this process compile kernels after its thread pool started, whatever its env says.

    numba re-reads ``NUMBA_NUM_THREADS`` from the environment at every compilation and
    refuses to compile when it differs from the size of the already launched pool. A Dask
    worker whose ``env={"NUMBA_NUM_THREADS": ...}`` was applied after numba had been
    imported (the worker imported the user's module first) is in exactly that state; the pool
    size cannot change any more, so the variable is set back to it. Kernels inside tasks are
    limited with :func:`numba_threads` instead.
    """
    import numba
    from numba.np.ufunc import parallel

    wanted = os.environ.get("NUMBA_NUM_THREADS")
    if wanted is None or wanted == str(numba.config.NUMBA_NUM_THREADS):
        return
    if parallel._is_initialized:
        os.environ["NUMBA_NUM_THREADS"] = str(numba.config.NUMBA_NUM_THREADS)
    else:  # the pool has not started: honour the variable
        numba.config.reload_config()
        parallel.NUM_THREADS = numba.config.NUMBA_NUM_THREADS


def in_dask_worker() -> bool:
    """True inside a task running on a Dask worker."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def task_numba_threads() -> contextlib.AbstractContextManager[None]:
    """Single-threaded numba kernels inside a Dask worker task, as they are elsewhere.

    A cluster runs one task per worker thread; a task whose kernels also spread over every
    core of the host would oversubscribe it.
    """
    return numba_threads(1 if in_dask_worker() else None)
