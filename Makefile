# Everything a fresh machine needs (Python 3.10+, make): `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The torch-parity tests, run a second time on the NumPy kernels (SOFTXENT_NATIVE=0): the
# fallback used where the C extension is not built must keep passing them too.
PARITY_TESTS := tests/test_softmax.py tests/test_cross_entropy.py tests/test_gradients.py \
	tests/test_layouts_threads.py tests/torch/test_torch_cross_entropy.py \
	tests/test_elementwise_losses.py tests/torch/test_torch_elementwise.py

.PHONY: demo test test-fast bench lint format clean

# Editing the C kernels reinstalls, which recompiles them.
$(STAMP): pyproject.toml setup.py $(wildcard src/csrc/*.c src/csrc/*.h)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first, pinned: the CPU build on local disk; a range would pull a CUDA build.
	$(BIN)/python -m pip install torch==2.13.0
	# The C kernels must build here (elsewhere a failed build falls back to NumPy).
	SOFTXENT_REQUIRE_NATIVE=1 $(BIN)/python -m pip install -e '.[torch,test,plot]' ruff mypy
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/softxent demo

test: $(STAMP)
	$(BIN)/python -m pytest -q
	SOFTXENT_NATIVE=0 $(BIN)/python -m pytest -q $(PARITY_TESTS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"
	SOFTXENT_NATIVE=0 $(BIN)/python -m pytest -q -m "not slow" $(PARITY_TESTS)

bench: $(STAMP)
	$(BIN)/python -m pip install jax jaxlib
	$(BIN)/softxent bench

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests examples
	$(BIN)/ruff check --fix src tests examples

clean:
	rm -rf $(VENV) build dist src/*.egg-info src/softxent/_core.*.so src/softxent/_core.*.pyd
