// shiftnn_loader: writes memory words shifted in over two wires (a debug/programming port).
// Part of shiftnn's board library (hand-written; the generated top instantiates it).
// On each rising edge of `sclk` (both inputs pass two-flop synchronisers) one bit of `sdi`
// enters a FRAME-bit shift register, most significant bit first.  A frame is
// {sel (2 bits), addr (ABITS), data (WIDTH)}; when its last bit arrives, `we` pulses for one
// clock with the frame's fields, and the top writes `data` at `addr` of memory `sel`.
// With the pins idle (held high by their pull-ups) nothing is ever written.
module shiftnn_loader #(
    parameter integer ABITS = 8,
    parameter integer WIDTH = 16
) (
    input wire clk,
    input wire rst,
    input wire sclk,
    input wire sdi,
    output reg we,
    output wire [1:0] sel,
    output wire [ABITS-1:0] addr,
    output wire [WIDTH-1:0] data
);
    localparam integer FRAME = 2 + ABITS + WIDTH;
    reg [2:0] sclk_s = 3'b111;
    reg [1:0] sdi_s = 2'b11;
    reg [FRAME-1:0] frame = 0;
    reg [$clog2(FRAME + 1)-1:0] count = 0;
    wire rise = sclk_s[1] & ~sclk_s[2];
    always @(posedge clk) begin
        sclk_s <= {sclk_s[1:0], sclk};
        sdi_s <= {sdi_s[0], sdi};
        we <= 1'b0;
        if (rst) begin
            count <= 0;
        end else if (rise) begin
            frame <= {frame[FRAME-2:0], sdi_s[1]};
            if (count == FRAME - 1) begin
                count <= 0;
                we <= 1'b1;
            end else begin
                count <= count + 1'b1;
            end
        end
    end
    assign {sel, addr, data} = frame;
endmodule
