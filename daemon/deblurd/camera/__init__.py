"""deblurd.camera: camera backends, the frame ring and exposure switching.

* :mod:`deblurd.camera.base` — the backend interface (:class:`CameraBackend`, :class:`FrameMeta`).
* :mod:`deblurd.camera.factory` — ``open_camera(settings)``: the configured backend.
* backends: :mod:`~deblurd.camera.sim` (default), :mod:`~deblurd.camera.replay`,
  :mod:`~deblurd.camera.v4l2`, :mod:`~deblurd.camera.picamera2`, :mod:`~deblurd.camera.argus`
  (hardware libraries are imported only by the backend that needs them).
* :mod:`deblurd.camera.ring` — ``FrameRing``: the preallocated ring of preview frames.
* :mod:`deblurd.camera.exposure` — ``capture_extra``: the long-exposure extra capture.
"""
