"""One source, two targets: numba-compilable Python compiled for the CPU and for the GPU.

A *core* is a plain Python function over arrays and scalars that numba can compile: no
allocation, no NumPy calls beyond indexing and ``shape``, :mod:`math` instead of NumPy
ufuncs (``math.isfinite``, ``math.sqrt``). :func:`core` compiles it for the CPU with
``numba.njit(cache=True)`` and returns that dispatcher, so CPU code calls it as before.
:func:`device` compiles the *same Python function* for the GPU with numba-cuda
(``cuda.jit(device=True, inline="always")``): the function is rebuilt over a copy of its
module's globals in which every numba CPU dispatcher it names is replaced by that
dispatcher's own GPU compilation, recursively. A core therefore calls other cores by their
plain global name (``_sum_core_nb(x, res, w, True)``), never through a module attribute.

A GPU *kernel* is a Python function that reads its thread index from ``cuda.grid(1)`` and
calls cores; :class:`GPUKernel` compiles it lazily (``numba.cuda`` is imported only then), so
this module imports on machines without numba-cuda or a GPU. Under numba-cuda's simulator
(``NUMBA_ENABLE_CUDASIM=1``) the same kernels execute on the CPU, thread by thread, which is
how CI runs them; :meth:`GPUKernel.ptx` compiles a kernel to PTX without a driver.

Where the two targets need different code for the same job (sorting: NumPy's introsort on
the CPU, a heap sort on the GPU), the core names a *primitive* declared with
``@core(gpu=gpu_version)``: same signature and result, one implementation per target, and
nothing else differs.

Examples
--------
>>> import numpy as np
>>> @core
... def _twice_nb(x, out):
...     for i in range(x.shape[0]):
...         out[i] = 2.0 * x[i]
>>> out = np.empty(3)
>>> _twice_nb(np.arange(3.0), out)
>>> out.tolist()
[0.0, 2.0, 4.0]
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import numba
from numba import njit
from numba.core.registry import CPUDispatcher

THREADS_PER_BLOCK = 128

#: Every :class:`GPUKernel` defined so far (tests compile each of them to PTX).
KERNELS: list[GPUKernel] = []
_GPU_VARIANTS: dict[Callable[..., Any], Callable[..., Any]] = {}
_lock = threading.RLock()


def core(fn: Callable[..., Any] | None = None, *, gpu: Callable[..., Any] | None = None,
         refcounts: bool = True, **options: Any) -> Any:
    """Compile ``fn`` for the CPU (``njit(cache=True)``); :func:`device` compiles it for the GPU.

    Parameters
    ----------
    fn : callable
        A numba-compilable Python function (see the module notes for what a core may use).
    gpu : callable, optional
        A primitive's GPU implementation (same signature and result) used in place of ``fn``
        when a GPU kernel is compiled.
    refcounts : bool
        False compiles the CPU version without numba's reference counting (``_nrt=False``):
        for a core called in a hot loop with many array arguments, whose every call would
        otherwise count each array's references up and down atomically. Such a core must
        return scalars only (no array it made or sliced) and must not allocate. No effect on
        the GPU.
    **options
        Further ``numba.njit`` options of the CPU compilation (``inline="always"``,
        ``fastmath={"reassoc"}``); the GPU compilation does not see them.

    Returns
    -------
    numba CPU dispatcher
        Callable from Python and from other numba code exactly like an ``@njit`` function.
    """

    def wrap(f: Callable[..., Any]) -> Any:
        if gpu is not None:
            _GPU_VARIANTS[f] = gpu
        cpu_options = options if refcounts else {**options, "_nrt": False}
        # numba caches only functions defined in a file (not in a doctest or a notebook cell)
        return njit(cache=not f.__code__.co_filename.startswith("<"), **cpu_options)(f)

    return wrap(fn) if fn is not None else wrap


def python_source(fn: Any) -> Callable[..., Any]:
    """The Python function behind a core, a numba dispatcher or a plain function."""
    return getattr(fn, "py_func", fn)


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def rebind(fn: Any, target: Callable[[Callable[..., Any]], Any]) -> types.FunctionType:
    """``fn``'s Python function over globals whose numba CPU dispatchers become ``target(...)``.

    ``target`` maps a core's Python function to its compilation for the other target (see
    :func:`device`). Globals that are not numba dispatchers (constants, :mod:`math`) stay.
    """
    py = python_source(fn)
    env = dict(py.__globals__)
    for name in _names(py.__code__):
        value = env.get(name)
        if isinstance(value, CPUDispatcher):
            env[name] = target(value.py_func)
        elif isinstance(value, _LazyCuda):
            env[name] = cuda_module()
    return types.FunctionType(py.__code__, env, py.__name__, py.__defaults__, py.__closure__)


def cuda_module() -> Any:
    """``numba.cuda`` (numba-cuda), imported on first use; a clear error when absent."""
    from qilin.errors import BackendError

    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba without its CUDA target
        raise BackendError(
            "GPU kernels need numba-cuda: pip install 'qilin[gpu]' (or numba-cuda)") from exc
    return cuda


class _LazyCuda:
    """Stands for ``numba.cuda`` in kernel modules until a kernel is compiled (see :data:`cuda`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(cuda_module(), name)

    def __repr__(self) -> str:
        return "<numba.cuda, imported on first use>"


#: ``numba.cuda`` for kernel modules (``from qilin.kernels.targets import cuda``): importing it
#: costs nothing; compiling a kernel puts the real module in its place.
cuda = _LazyCuda()


def simulated() -> bool:
    """True when numba-cuda runs kernels in its CPU simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    return bool(getattr(numba.config, "ENABLE_CUDASIM", 0))


def kernels_runnable() -> bool:
    """True when GPU kernels can execute here: under the simulator or on a real CUDA device."""
    if simulated():
        return True
    try:
        return bool(cuda_module().is_available())
    except Exception:  # no numba-cuda, no driver: nothing can launch
        return False


def device(fn: Callable[..., Any]) -> Any:
    """The GPU device-function compilation of core ``fn`` (its Python function), cached.

    Examples
    --------
    >>> device.__name__
    'device'
    """
    return _device(python_source(fn))


@functools.cache
def _device(py: Callable[..., Any]) -> Any:
    py = _GPU_VARIANTS.get(py, py)
    with _lock:
        return cuda_module().jit(device=True, inline="always")(rebind(py, device))


@contextlib.contextmanager
def _without_fma() -> Iterator[None]:
    """numba-cuda compilations inside this block use NVVM's ``-fma=0``.

    NVVM contracts ``a * b + c`` into one fused multiply-add by default (``-fma=1``, whatever
    ``fastmath`` says), which rounds once where numba's CPU code rounds twice; numba-cuda has
    no option for it (NVIDIA/numba-cuda#118). So that a core rounds alike on both targets,
    NVVM's compile call gets ``fma=False`` here (``fastmath=True`` still turns it on).
    """
    if simulated():
        yield
        return
    from numba.cuda.cudadrv import nvvm

    with _lock:
        original = nvvm.compile_ir

        def compile_ir(llvmir: Any, **options: Any) -> Any:
            options.setdefault("fma", False)
            return original(llvmir, **options)

        nvvm.compile_ir = compile_ir
        try:
            yield
        finally:
            nvvm.compile_ir = original


class GPUKernel:
    """A GPU kernel written in Python, compiled with numba-cuda on first launch.

    Kernels are compiled without fused multiply-adds, so that their arithmetic rounds as the
    CPU compilation of the same cores does.

    Parameters
    ----------
    fn : callable
        The kernel: takes arrays and scalars and reads its index with ``cuda.grid(1)``, where
        ``cuda`` is this module's :data:`cuda`.
    example : callable, optional
        Returns small example arguments of the kernel's argument types; the CI test that
        compiles every kernel to PTX uses it (a kernel without one fails that test).

    Examples
    --------
    >>> def _fill_kernel(out, value):
    ...     pass
    >>> GPUKernel(_fill_kernel).name
    '_fill_kernel'
    """

    def __init__(self, fn: Callable[..., Any],
                 example: Callable[[], tuple[Any, ...]] | None = None):
        self.fn = fn
        self.name = fn.__name__
        self.example = example
        functools.update_wrapper(self, fn)
        KERNELS.append(self)

    @functools.cached_property
    def compiled(self) -> Any:
        with _lock:
            return cuda_module().jit(rebind(self.fn, device))

    def launch(self, n_threads: int, *args: Any, threads: int = THREADS_PER_BLOCK) -> None:
        """Run the kernel on ``n_threads`` threads (a 1-D grid of ``threads``-wide blocks)."""
        if n_threads <= 0:
            return
        blocks = math.ceil(n_threads / threads)
        with _without_fma():  # the first launch of a signature compiles it
            self.compiled[blocks, min(threads, n_threads)](*args)

    def ptx(self, *example_args: Any, cc: tuple[int, int] = (9, 0)) -> str:
        """PTX for the argument types of ``example_args`` (default: the kernel's ``example``),
        compiled without a GPU or driver (not under the simulator)."""
        cuda = cuda_module()
        if not example_args:
            if self.example is None:
                raise TypeError(f"GPU kernel {self.name} declares no example arguments")
            example_args = self.example()
        sig = tuple(numba.typeof(a) for a in example_args)
        with _without_fma():
            ptx, _ = cuda.compile_ptx(rebind(self.fn, device), sig, cc=cc)
        return ptx


def gpu_kernel(fn: Callable[..., Any] | None = None, *,
               example: Callable[[], tuple[Any, ...]] | None = None) -> Any:
    """Decorator form of :class:`GPUKernel` (``@gpu_kernel`` or ``@gpu_kernel(example=...)``)."""
    if fn is None:
        return functools.partial(GPUKernel, example=example)
    return GPUKernel(fn, example)
