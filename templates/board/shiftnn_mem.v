// shiftnn_mem: a synchronous-read memory initialised from a $readmemh file, with a write port
// for the loader (shiftnn_loader.v).
// Part of shiftnn's board library (hand-written; the generated top instantiates it).
// Read data appears one clock after the address while `en` is high, the same timing as the
// engine's own memories, so yosys maps it to block RAM with the file as its contents.  The
// write port also keeps synthesis from treating the contents as constants: a ROM's constant
// bits (a zero-padded channel, say) would let yosys prune the logic they feed, and the
// resource report would describe a smaller design than the engine.
module shiftnn_mem #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 16,
    parameter integer ABITS = 4,
    parameter INIT = ""
) (
    input wire clk,
    input wire en,
    input wire [ABITS-1:0] addr,
    output reg [WIDTH-1:0] data,
    input wire we,
    input wire [ABITS-1:0] waddr,
    input wire [WIDTH-1:0] wdata
);
    (* no_rw_check *)
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    generate
        if (INIT != "") begin : init
            initial $readmemh(INIT, mem);
        end
    endgenerate
    always @(posedge clk) begin
        if (we)
            mem[waddr] <= wdata;
        if (en)
            data <= mem[addr];
    end
endmodule
