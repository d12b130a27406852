"""Per-series cores and order primitives written once, compiled for the CPU and the GPU.

See :mod:`qilin.kernels.targets` for how one Python source becomes a numba CPU function and a
numba-cuda device function, and ``docs/gpu.md`` for what runs where.
"""

from qilin.kernels.targets import GPUKernel, core, cuda, device, gpu_kernel, simulated

__all__ = ["GPUKernel", "core", "cuda", "device", "gpu_kernel", "simulated"]
