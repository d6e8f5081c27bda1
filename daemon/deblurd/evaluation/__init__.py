"""deblurd.evaluation: image-quality metrics and reference methods to compare the pipeline with.

Used by ``tools/evaluate.py`` on simulated bursts (where the sharp truth is known). Nothing
in the daemon imports this package at run time.
"""

from deblurd.evaluation.metrics import crop_border, mse, psnr, ssim

__all__ = ["crop_border", "mse", "psnr", "ssim"]
