// shiftnn_rom: a synchronous-read ROM initialised from a $readmemh file.
// Part of shiftnn's board library (hand-written; the generated top instantiates it).
// Read data appears one clock after the address while `en` is high, the same timing as the
// engine's own memories, so yosys maps it to block RAM with the file as its contents.
module shiftnn_rom #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 16,
    parameter integer ABITS = 4,
    parameter INIT = ""
) (
    input wire clk,
    input wire en,
    input wire [ABITS-1:0] addr,
    output reg [WIDTH-1:0] data
);
    (* no_rw_check *)
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    generate
        if (INIT != "") begin : init
            initial $readmemh(INIT, mem);
        end
    endgenerate
    always @(posedge clk) begin
        if (en)
            data <= mem[addr];
    end
endmodule
