"""Power-of-two quantisation-aware training and the integer contract the hardware implements."""

__version__ = "0.1.0"
