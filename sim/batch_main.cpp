// Batch harness for the network core: runs many images through a Verilated `network_core`
// with no Python in the per-cycle loop. Built and driven by sim/batch.py (see its docstring
// for the file formats); usage: `<exe> INPUT OUTPUT [TRACE.vcd]`.
//
// A cycle is: set the inputs (clk low), eval (combinational outputs settle, read them),
// then the rising edge (clk high, eval). An image:
//   1. one cycle with in_first high (in_valid low);
//   2. the codes, one per cycle with in_valid high, moving on where in_ready was high;
//   3. cycles with everything low until busy is low;
//   4. the start cycle (start high), then cycles until one in which done is high; the count
//      is the number of rising edges from the start cycle's to the last one before done is
//      seen (done high in the cycle right after the start cycle counts 1). This is the count
//      of sim.amaranth_sim.run_network and hw.program.NetworkProgram.cycles(): their
//      testbench reads done after each tick. In every cycle of the run after the start cycle
//      (done's included) step_done is read the same way: the counts at which it is high are
//      the ends of the program's steps; the image records their differences (the first from
//      the start cycle), and fails (exit 4) unless there are exactly n_steps of them;
//   5. after the rising edge that ends the done cycle, with all inputs low, each logit is read
//      by setting logit_addr and evaluating (no clock edge); the next image's in_first cycle
//      follows.
// Exit status: 0 done, 2 bad arguments or files, 3 a cycle limit was exceeded (hang), 4 an image
// had a number of step_done cycles other than n_steps (n_steps 0xffffffff: step_done is not
// watched and no step cycles are written).

#include "Vnetwork_core.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace {

const char kInMagic[8] = {'N', 'C', 'B', 'A', 'T', 'C', 'H', '2'};
const char kOutMagic[8] = {'N', 'C', 'R', 'E', 'S', 'L', 'T', '2'};
const uint32_t kNoSteps = 0xffffffffu;  // n_steps: don't watch step_done
const int kResetCycles = 4;

struct Header {
    uint32_t n_images, n_inputs, num_classes, logit_bits, input_bits, first_image, n_steps;
    uint64_t cycle_limit;
};

[[noreturn]] void fail(int status, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

void fail(int status, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fputs("error: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    std::exit(status);
}

uint32_t read_u32(const unsigned char* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

uint64_t read_u64(const unsigned char* p) { return uint64_t(read_u32(p)) | uint64_t(read_u32(p + 4)) << 32; }

void put_u32(std::vector<unsigned char>& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back((v >> (8 * i)) & 0xff);
}

void put_u64(std::vector<unsigned char>& out, uint64_t v) {
    put_u32(out, uint32_t(v));
    put_u32(out, uint32_t(v >> 32));
}

class Harness {
  public:
    Harness(const char* trace_path) : ctx_(new VerilatedContext), top_() {
#if VM_TRACE
        if (trace_path) ctx_->traceEverOn(true);
#else
        if (trace_path) fail(2, "this executable was built without tracing (build_batch(..., waves=True))");
#endif
        top_.reset(new Vnetwork_core{ctx_.get(), "network_core"});
#if VM_TRACE
        if (trace_path) {
            trace_.reset(new VerilatedVcdC);
            top_->trace(trace_.get(), 99);
            trace_->open(trace_path);
        }
#endif
        idle();
        top_->rst = 1;
        for (int i = 0; i < kResetCycles; ++i) {
            settle();
            edge();
        }
        top_->rst = 0;
    }

    ~Harness() {
#if VM_TRACE
        if (trace_) trace_->close();
#endif
        top_->final();
    }

    Vnetwork_core* top() { return top_.get(); }
    uint64_t cycles() const { return cycles_; }

    void idle() {
        top_->in_first = 0;
        top_->in_valid = 0;
        top_->in_data = 0;
        top_->start = 0;
        top_->logit_addr = 0;
    }

    // Start of a cycle: clk low, inputs as set; combinational outputs are valid afterwards.
    void settle() {
        top_->clk = 0;
        top_->eval();
        dump();
    }

    // End of a cycle: the rising edge.
    void edge() {
        top_->clk = 1;
        top_->eval();
        ++cycles_;
        dump();
    }

  private:
    void dump() {
#if VM_TRACE
        if (trace_) trace_->dump(ctx_->time());
#endif
        ctx_->timeInc(1);
    }

    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<Vnetwork_core> top_;
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> trace_;
#endif
    uint64_t cycles_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3 || argc > 4) fail(2, "usage: %s INPUT OUTPUT [TRACE.vcd]", argv[0]);
    const char* in_path = argv[1];
    const char* out_path = argv[2];
    const char* trace_path = argc == 4 ? argv[3] : nullptr;

    FILE* in = std::fopen(in_path, "rb");
    if (!in) fail(2, "cannot open input file %s", in_path);
    unsigned char raw[44];
    if (std::fread(raw, 1, sizeof raw, in) != sizeof raw || std::memcmp(raw, kInMagic, 8) != 0)
        fail(2, "%s is not a batch input file (bad header)", in_path);
    Header h{read_u32(raw + 8),  read_u32(raw + 12), read_u32(raw + 16), read_u32(raw + 20),
             read_u32(raw + 24), read_u32(raw + 28), read_u32(raw + 32), read_u64(raw + 36)};
    if (h.logit_bits < 1 || h.logit_bits > 32 || h.input_bits < 1 || h.input_bits > 8 || h.num_classes < 1 ||
        h.cycle_limit < 1)
        fail(2, "%s: bad header (logit_bits %u, input_bits %u, num_classes %u, cycle_limit %" PRIu64 ")", in_path,
             h.logit_bits, h.input_bits, h.num_classes, h.cycle_limit);
    const size_t n_codes = size_t(h.n_images) * h.n_inputs;
    std::vector<unsigned char> codes(n_codes);
    if (n_codes && std::fread(codes.data(), 1, n_codes, in) != n_codes)
        fail(2, "%s: truncated (expected %zu codes)", in_path, n_codes);
    std::fclose(in);
    for (size_t i = 0; i < n_codes; ++i)
        if (codes[i] >> h.input_bits)
            fail(2, "%s: image %zu has code %u, over %u bits", in_path, h.first_image + i / h.n_inputs, codes[i],
                 h.input_bits);

    FILE* out = std::fopen(out_path, "wb");
    if (!out) fail(2, "cannot open output file %s", out_path);
    std::vector<unsigned char> buf(kOutMagic, kOutMagic + 8);
    put_u32(buf, h.n_images);
    put_u32(buf, h.num_classes);
    put_u32(buf, h.n_steps == kNoSteps ? 0 : h.n_steps);

    const auto t0 = std::chrono::steady_clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    const uint32_t last = h.first_image + (h.n_images ? h.n_images - 1 : 0);
    const uint32_t step = h.n_images >= 10 ? h.n_images / 10 : 1;
    const uint64_t limit = h.cycle_limit;
    const uint32_t mask = h.logit_bits == 32 ? 0xffffffffu : (1u << h.logit_bits) - 1;
    const uint32_t sign = 1u << (h.logit_bits - 1);
    const bool watch_steps = h.n_steps != kNoSteps;
    std::vector<uint64_t> step_ends(watch_steps ? h.n_steps : 0);

    Harness sim(trace_path);
    Vnetwork_core* top = sim.top();
    for (uint32_t n = 0; n < h.n_images; ++n) {
        const uint32_t image = h.first_image + n;
        const unsigned char* x = codes.data() + size_t(n) * h.n_inputs;

        // 1. in_first
        top->in_first = 1;
        sim.settle();
        sim.edge();
        top->in_first = 0;

        // 2. the codes
        uint64_t stalled = 0;
        for (uint32_t i = 0; i < h.n_inputs;) {
            top->in_valid = 1;
            top->in_data = x[i];
            sim.settle();
            if (top->in_ready) {
                ++i;
                stalled = 0;
            } else if (++stalled > limit) {
                fail(3, "image %u: in_ready stayed low for %" PRIu64 " cycles at code %u of %u (cycle limit)", image,
                     limit, i, h.n_inputs);
            }
            sim.edge();
        }
        top->in_valid = 0;
        top->in_data = 0;

        // 3. wait for busy low
        sim.settle();
        for (uint64_t waited = 0; top->busy; sim.settle()) {
            if (++waited > limit)
                fail(3, "image %u: busy stayed high for %" PRIu64 " cycles after the last code (cycle limit)", image,
                     limit);
            sim.edge();
        }

        // 4. start .. done
        top->start = 1;
        sim.settle();
        sim.edge();
        top->start = 0;
        uint64_t count = 1;
        uint32_t steps_seen = 0;
        for (;;) {
            sim.settle();
            if (watch_steps && top->step_done) {
                if (steps_seen < h.n_steps) step_ends[steps_seen] = count;
                ++steps_seen;
            }
            if (top->done) break;
            sim.edge();
            if (++count > limit)
                fail(3, "image %u: no done within %" PRIu64 " cycles of start (cycle limit)", image, limit);
        }
        sim.edge();  // ends the done cycle
        if (watch_steps && steps_seen != h.n_steps)
            fail(4, "image %u: step_done was high in %u cycles of the run, expected %u (n_steps)", image, steps_seen,
                 h.n_steps);

        // 5. logits
        put_u64(buf, count);
        for (size_t i = 0; i < step_ends.size(); ++i) put_u64(buf, step_ends[i] - (i ? step_ends[i - 1] : 0));
        for (uint32_t c = 0; c < h.num_classes; ++c) {
            top->logit_addr = c;
            top->eval();
            const uint32_t v = uint32_t(top->logit_data) & mask;
            put_u32(buf, (v & sign) ? v | ~mask : v);  // sign-extended two's complement
        }
        top->logit_addr = 0;

        if (buf.size() >= (1u << 20)) {
            if (std::fwrite(buf.data(), 1, buf.size(), out) != buf.size()) fail(2, "cannot write %s", out_path);
            buf.clear();
        }
        if ((n + 1) % step == 0 || n + 1 == h.n_images) {
            const double s = seconds();
            std::fprintf(stderr, "batch: %u/%u images (%u..%u), %" PRIu64 " cycles, %.1f s, %.2f Mcycles/s\n", n + 1,
                         h.n_images, h.first_image, last, sim.cycles(), s, s > 0 ? sim.cycles() / s / 1e6 : 0.0);
        }
    }
    if (std::fwrite(buf.data(), 1, buf.size(), out) != buf.size() || std::fclose(out) != 0)
        fail(2, "cannot write %s", out_path);
    return 0;
}
