"""Amaranth hardware: the shift-accumulate systolic array and its controller (the hardware issue)."""
