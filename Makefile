# Two commands do all the set-up on a fresh machine (each installs what is still missing):
#   make demo   answer a question with the embedded local models (no API key, no network)
#   make test   run the test suite (what CI runs)
# llama.cpp (the embedded local models) is compiled once by scripts/build-llama.sh for a portable
# instruction set (x86-64: AVX2/FMA/F16C/BMI2; ARM64: generic), never with -march=native, and kept
# in a wheelhouse keyed by version and flags (~/.cache/orchestra/wheels): a wheel pip cached from
# a native build is never picked up. `make llama-rebuild` compiles it again.
# PyTorch: `torch==$(TORCH_VERSION)` is installed first. On this project's CI machines that is a
# CPU build from local disk; elsewhere pass TORCH_PIP_ARGS to pick a CPU wheel index if you want to
# avoid the large CUDA build (any torch >= 2.4 works).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed
# llama.cpp is built with OpenMP: spinning worker threads make it ~25x slower on a busy 2-core box.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup llama llama-rebuild doctor demo test test-fast typecheck lint bench clean system-deps

$(STAMP): pyproject.toml Makefile scripts/build-llama.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(MAKE) --no-print-directory llama
	$(PY) -m pip install -q -e ".[all,dev,viewer]"
	touch $(STAMP)

# Install the portable llama-cpp-python wheel (built on first use) into the venv.
llama:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	W="$$(bash scripts/build-llama.sh portable $(PY))" && \
	  $(PY) -m pip install -q --force-reinstall --no-deps "$$W"

# Compile llama-cpp-python again (e.g. after a toolchain change) and install it.
llama-rebuild:
	rm -rf "$${ORCHESTRA_WHEELHOUSE:-$$HOME/.cache/orchestra/wheels}"/llama-cpp-python-*-portable-*
	$(MAKE) --no-print-directory llama

setup: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

demo: setup
	$(VENV)/bin/orchestra doctor
	$(VENV)/bin/orchestra run "What is the capital of France?"

doctor: setup
	$(VENV)/bin/orchestra doctor

test: setup system-deps
	$(PY) -m pytest -q -rs

test-fast: setup
	$(PY) -m pytest -q -m "not local_model and not ray and not browser"

typecheck: setup
	$(PY) -m mypy

lint: setup
	$(PY) -m ruff check orchestra tests benchmarks examples
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) benchmarks/runtime_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
