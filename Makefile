# r1kit: `make test` and `make demo` work on a fresh machine with nothing typed first.
#
# torch: if the virtual environment has no torch yet, TORCH_SPEC is installed (the CPU wheel by
# default). A GPU user installs their own CUDA build of torch into .venv first (or points VENV at an
# environment that has one); then nothing here touches it.
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.r1kit-installed

.PHONY: install test demo bench bench-learning clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

test: $(STAMP)
	$(BIN)/python -m pytest tests

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
