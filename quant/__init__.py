"""Power-of-two quantisation-aware training: quantisers, layers, methods, export and the QONNX bridge."""
