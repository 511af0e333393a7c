// shiftnn_reset: power-on reset and a button, synchronised to the clock.
// Part of shiftnn's board library (hand-written; the generated top instantiates it).
// `rst` is high for 2**CYCLES_LOG2 clocks after configuration and while `button` is held
// (plus three clocks: the button passes a two-flop synchroniser, and `rst` is a register of its
// own, so the net that reaches every reset pin starts at a flip-flop), and falls on a clock edge.
module shiftnn_reset #(
    parameter integer CYCLES_LOG2 = 4
) (
    input wire clk,
    input wire button,
    output wire rst
);
    reg [1:0] sync = 2'b11;
    reg [CYCLES_LOG2:0] count = 0;
    reg rst_q = 1'b1;
    always @(posedge clk) begin
        sync <= {sync[0], button};
        if (sync[1])
            count <= 0;
        else if (!count[CYCLES_LOG2])
            count <= count + 1'b1;
        rst_q <= !count[CYCLES_LOG2];
    end
    assign rst = rst_q;
endmodule
