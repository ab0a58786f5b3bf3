# Two entry points that work on a fresh machine (Python >= 3.10 with venv):
#   make demo   the simulated arm driven by the shipped model, closed loop, with a summary
#   make test   the whole test suite (unit, core integration, ROS integration over real DDS)
# Both build .venv on first use. TORCH pins the CPU wheel; set TORCH=torch for a CUDA build.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.PHONY: demo test lint install

$(BIN)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/diffusion-controller demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check diffusion_controller test launch
