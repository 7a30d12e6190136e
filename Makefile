# The two commands a new machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean down

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# CPU torch first: a local wheel (pip's find-links) if the machine has one, else PyTorch's CPU
	@# index, else PyPI. A bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null \
	  || $(BIN)/python -m pip install -q --no-index "$(TORCH_SPEC)" 2>/dev/null \
	  || $(BIN)/python -m pip install -q --timeout 20 --retries 1 --index-url $(TORCH_INDEX) "$(TORCH_SPEC)" \
	  || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(BIN)/streamrec demo

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not stack and not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

down:
	$(BIN)/streamrec down

clean:
	rm -rf $(VENV) .streamrec .pytest_cache build *.egg-info
