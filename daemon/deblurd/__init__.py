"""deblurd: burst deblurring camera daemon for Raspberry Pi 5 and NVIDIA Jetson."""

__version__ = "0.1.0"
