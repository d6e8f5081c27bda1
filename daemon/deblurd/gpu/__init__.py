"""CUDA registration and fusion (DESIGN §1 step 4) for Jetson, with a CPU build for CI.

``*.cu``: the kernels (frame conversions, pyramid, Harris + persistence, pyramidal LK,
warp, fusion), plain one-thread-per-output CUDA that ``cuda_host_emu.h`` also compiles
for the host. :mod:`~deblurd.gpu.backend` (pooled device memory, launches;
:func:`available`), :mod:`~deblurd.gpu.cuda` (pycuda, imported lazily),
:mod:`~deblurd.gpu.emulation` (g++ + ctypes), :mod:`~deblurd.gpu.registrar` and
:mod:`~deblurd.gpu.fuser` (the OpenCV registrar's and the CPU fuser's interfaces, plus
their device-resident entry points), :mod:`~deblurd.gpu.resident` (the once-uploaded
uint8 frame, its conversions on the device, the device-resident aligned frame),
:mod:`~deblurd.gpu.handoff` (stage 4 as a stream: aligner and fusion job, for every
backend), :mod:`~deblurd.gpu.factory` (backend choice).
"""
