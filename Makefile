# shiftnn: every target bootstraps the local virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MNIST  ?= ../shared/data/mnist-10k
ARGS   ?=
PYTEST_ARGS ?=

SIM_RUN   ?= runs/demo-pow2
MNIST_RUN ?= runs/mnist-pow2
# the MNIST CNN the iCEBreaker runs: ternary weights (W2), 4-bit activations
NET_RUN   ?= runs/mnist-w2

.PHONY: setup test test-all demo train sim sim-mnist sim-network bitstream bitstream-mnist sweep explore calibrate hls lint formal bench methods \
	clean distclean help

help:
	@echo "make demo       digits CNN: train, export, verify, run the test split on the simulated network engine,"
	@echo "                build the iCEBreaker bitstream (engine + UART link) and print its report"
	@echo "make test       the quick test suite (every stage on small cases)"
	@echo "make test-all   the full suite, slow tests included (MNIST accuracy, long runs)"
	@echo "make train ARGS='--method pow2 ...'   python -m quant.train with your flags"
	@echo "make sim        RTL of the demo model's layers on Verilator (cocotb), checked against its golden vectors"
	@echo "make sim-mnist  the same for a CNN trained on MNIST ($(MNIST))"
	@echo "make bitstream  iCEBreaker bitstream of the demo model's network engine + report (BOARD=ulx3s-85f|ulx3s-25f)"
	@echo "make sim-network the ternary MNIST CNN: all 2,000 mnist-10k test images on the cycle-accurate engine"
	@echo "make bitstream-mnist  the iCEBreaker bitstream of that MNIST CNN (BOARD=... for ECP5)"
	@echo "make sweep      array sizes x widths on BOARD: logic cells and Fmax table and plot"
	@echo "make explore    co-design sweep of the MNIST CNN (bits x array shapes) on the iCEBreaker and the ULX3S-85F:"
	@echo "                accuracy, cycles, resources, Pareto front, recommended design built for real (build/explore)"
	@echo "make calibrate  the real builds the explorer's resource model is fitted to (BOARD=...; sim/calibration)"
	@echo "make hls        HLS C++ of the demo model, compiled with g++ and checked on its golden vectors"
	@echo "make lint       verilator --lint-only of the generated engine (warnings that matter)"
	@echo "make formal     SymbiYosys proofs of the PE, requantiser, array and widths against the integer contract,"
	@echo "                and of the host link's frame check (no engine start on a bad CRC, LEN, type or code)"
	@echo "                (demo, MNIST and 20 random designs; ARGS='--configs random --blocks pe' for less)"
	@echo "make bench      benchmarks (QAT vs float step time, 1 vs 2 training processes, simulator speed, throughput)"
	@echo "make methods    every quantisation method x bits x 3 seeds on digits and MNIST: docs/results.md and its plot (~1 h)"
	@echo "make setup      create $(VENV) with the pinned tool versions"
	@echo "make clean      remove runs/ and build outputs; make distclean also removes $(VENV)"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,onnx]"
	@touch $@

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m quant.train --data digits --model cnn --method float --epochs 20 --out runs/demo-float --no-progress
	$(PY) -m quant.train --data digits --model cnn --method pow2 --wbits 4 --abits 4 \
		--init-from runs/demo-float --epochs 15 --out runs/demo-pow2
	$(PY) -m quant.diverge runs/demo-pow2/artifact.npz
	$(PY) -m sim.network runs/demo-pow2/artifact.npz --data digits
	$(PY) -m fpga.build --board icebreaker --artifact runs/demo-pow2/artifact.npz --out build/fpga/demo-icebreaker

train: $(STAMP)
	$(PY) -m quant.train $(ARGS)

# trains-or-reuses the model, exports it, writes build/rtl/engine.v and runs every layer on Verilator
sim: $(STAMP)
	@test -f $(SIM_RUN)/artifact.npz || $(MAKE) --no-print-directory demo
	$(PY) -m sim.layers $(SIM_RUN)/artifact.npz --samples 4

sim-mnist: $(STAMP)
	@test -f $(MNIST_RUN)/artifact.npz || { \
		$(PY) -m quant.train --data mnist --data-dir $(MNIST) --model cnn --method float --epochs 8 \
			--out $(MNIST_RUN)-float --no-progress && \
		$(PY) -m quant.train --data mnist --data-dir $(MNIST) --model cnn --method pow2 --wbits 4 --abits 4 \
			--init-from $(MNIST_RUN)-float --epochs 8 --out $(MNIST_RUN) --no-progress; }
	$(PY) -m sim.layers $(MNIST_RUN)/artifact.npz --samples 4

BOARD ?= icebreaker
# trains-or-reuses the demo model and builds the bitstream of its network engine and UART link
# (ARGS='--design selftest' for the one-layer self-test on the LEDs)
bitstream: $(STAMP)
	@test -f $(SIM_RUN)/artifact.npz || $(MAKE) --no-print-directory demo
	$(PY) -m fpga.build --board $(BOARD) --artifact $(SIM_RUN)/artifact.npz $(ARGS)

$(NET_RUN)/artifact.npz: | $(STAMP)
	$(PY) -m quant.train --data mnist --data-dir $(MNIST) --model cnn --method float --epochs 8 \
		--out $(NET_RUN)-float --no-progress
	$(PY) -m quant.train --data mnist --data-dir $(MNIST) --model cnn --method pow2 --wbits 2 --abits 4 \
		--init-from $(NET_RUN)-float --epochs 8 --out $(NET_RUN) --no-progress

# the MNIST CNN's array on each board (bench/throughput.py measures both): on the iCEBreaker
# 16x4 with the rows' skew in block RAM and weight words of four rows, which fits the UP5K; on
# the ULX3S-85F 32x32 with weight words of eight rows; the board's default elsewhere
NET_ARRAY_icebreaker := --rows 16 --cols 4 --skew-ram true --wgt-lanes 4
NET_ARRAY_ulx3s-85f := --rows 32 --cols 32 --wgt-lanes 8 --input-reg true
NET_ARRAY ?= $(NET_ARRAY_$(BOARD))

# every mnist-10k test image through the cycle-accurate engine (Verilator), against the reference
sim-network: $(NET_RUN)/artifact.npz
	$(PY) -m sim.network $(NET_RUN)/artifact.npz --data mnist --data-dir $(MNIST) --board $(BOARD) \
		$(if $(wildcard build/fpga/mnist-$(BOARD)/report.json),--fpga-report build/fpga/mnist-$(BOARD)/report.json,$(NET_ARRAY)) \
		$(ARGS)

bitstream-mnist: $(NET_RUN)/artifact.npz
	$(PY) -m fpga.build --board $(BOARD) --artifact $(NET_RUN)/artifact.npz --out build/fpga/mnist-$(BOARD) \
		$(NET_ARRAY) $(ARGS)

sweep: $(STAMP)
	$(PY) -m sim.explore --hardware --board $(BOARD) $(ARGS)

# the co-design explorer on the MNIST CNN: trainings and builds cached in runs/explore
explore: $(STAMP)
	$(PY) -m sim.explore --model cnn --data mnist --data-dir $(MNIST) --board icebreaker \
		--out build/explore/icebreaker $(ARGS)
	$(PY) -m sim.explore --model cnn --data mnist --data-dir $(MNIST) --board ulx3s-85f \
		--out build/explore/ulx3s-85f $(ARGS)
	@mkdir -p docs/codesign
	for b in icebreaker ulx3s-85f; do for p in accuracy_vs_logic speed_vs_logic; do \
		cp build/explore/$$b/$$p.png docs/codesign/$$b-$$p.png; done; done

calibrate: $(STAMP)
	$(PY) -m sim.explore --calibrate --board $(BOARD) --model cnn --data mnist --data-dir $(MNIST) $(ARGS)

# HLS C++ of the demo model and its g++ testbench on the golden vectors
hls: $(STAMP)
	@test -f $(SIM_RUN)/artifact.npz || $(MAKE) --no-print-directory demo
	$(PY) -m templates.hls $(SIM_RUN)/artifact.npz --out build/hls
	build/hls/build.sh

lint: $(STAMP)
	$(PY) -m hw.generate --top engine --out build/rtl && $(PY) -m sim.lint build/rtl/engine.v --top engine

# formal proofs (yowasp-sby, smtbmc, yices): a table of block, config, result and seconds in build/formal
formal: $(STAMP)
	$(PY) -m sim.formal $(ARGS)

bench: $(STAMP)
	$(PY) bench/train_speed.py --data-dir $(MNIST)
	$(PY) bench/ddp.py --data-dir $(MNIST)
	$(PY) bench/sim_speed.py
	$(PY) bench/throughput.py --data-dir $(MNIST)

# the methods comparison (runs cached in runs/methods: a rerun trains only what is missing)
methods: $(STAMP)
	$(PY) bench/methods.py --data-dir $(MNIST) --jobs 2

clean:
	rm -rf runs build .pytest_cache .hypothesis
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
