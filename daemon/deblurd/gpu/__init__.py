"""CUDA registration and fusion (DESIGN §1 step 4) for Jetson, with a CPU build for CI.

``*.cu``: the kernels (pyramid, Harris + persistence, pyramidal LK, warp, fusion), plain
one-thread-per-output CUDA that ``cuda_host_emu.h`` also compiles for the host.
:mod:`~deblurd.gpu.backend` (pooled device memory, launches; :func:`available`),
:mod:`~deblurd.gpu.cuda` (pycuda, imported lazily), :mod:`~deblurd.gpu.emulation` (g++ +
ctypes), :mod:`~deblurd.gpu.registrar` and :mod:`~deblurd.gpu.fuser` (the OpenCV
registrar's and the CPU fuser's interfaces), :mod:`~deblurd.gpu.factory` (backend choice).
"""
