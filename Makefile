# The README's two commands are `make demo` and `make test`; each sets everything up first.
# torch is pinned to the CPU build on purpose: an unpinned torch pulls gigabytes of CUDA packages.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test bench clean

$(BIN)/tunekit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/tunekit

demo: install
	$(BIN)/tunekit run examples/banking77/config.yaml

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/train_classification.py
	$(BIN)/python bench/train_generation.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) tunekit-workspace examples/*/tunekit-workspace
