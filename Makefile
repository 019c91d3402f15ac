# r1kit: `make test` and `make demo` work on a fresh machine with nothing typed first.
#
# torch: if the virtual environment has no torch yet, TORCH_SPEC is installed (the CPU wheel by
# default). A GPU user installs their own CUDA build of torch into .venv first (or points VENV at an
# environment that has one); then nothing here touches it. EXTRAS picks pyproject.toml's optional
# dependencies (`make install EXTRAS=test,wandb`, as CI does).
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= test
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.r1kit-installed

.PHONY: install test test-numerics demo bench bench-learning clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $@

test: $(STAMP)
	$(BIN)/python -m pytest tests

# The tests marked `numerics` (equivalences of two float computations) again, as another machine
# would run them: torch's portable kernels on 1 thread, then its AVX2 kernels with MKL's
# reproducible (SSE2) matmul path on 2 threads (x86-64 only). A tolerance that holds only for this
# CPU's summation order fails here, not on a user's. The variables must reach torch before it is
# imported, so they are set on pytest's command line (tests/conftest.py refuses a capability that
# did not take). Each run has its own inductor cache: one built under another capability can fail to
# compile under this one.
NUMERICS = $(BIN)/python -m pytest tests -m numerics
test-numerics: $(STAMP)
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/.cache/inductor-default $(NUMERICS)
	@case "$$(uname -m)" in x86_64|amd64) \
	  echo "ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=2 $(NUMERICS)"; \
	  ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=2 TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/.cache/inductor-avx2 $(NUMERICS);; \
	esac

demo: $(STAMP)
	$(BIN)/r1kit demo

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/grpo_vs_trl.py

bench-learning: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/learning_vs_trl.py

clean:
	rm -rf $(VENV) runs .cache
