"""yosys/nextpnr bitstream builds and their reports for iCE40 UP5K and ECP5 boards (the FPGA issue)."""
