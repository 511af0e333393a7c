"""cocotb testbenches on Verilator that check the RTL against the integer reference (the hardware issue)."""
