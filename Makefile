# Two entry points that work on a fresh machine (Python >= 3.10 with venv):
#   make demo   the simulated arm driven by the shipped model, closed loop, with a summary
#               (TASK=pick_place for the cube-into-a-bin task; default panda_reach)
#   make test   the whole test suite (unit, core integration, ROS integration over real DDS)
# Both build .venv on first use. TORCH pins the CPU wheel; set TORCH=torch for a CUDA build.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
TASK ?= panda_reach
BIN := $(VENV)/bin

.PHONY: demo test test-py310 test-floors lint install

$(BIN)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/diffusion-controller demo --task $(TASK)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The deployment target runs Python 3.10 (JetPack 6 / Humble). This checks the package's torch-free
# core there: no torch, onnx or ROS wheels exist for that interpreter here, so those tests skip.
PY310 ?= python3.10
VENV310 ?= .venv310
$(VENV310)/.installed: setup.py
	$(PY310) -m venv $(VENV310)
	$(VENV310)/bin/python -m pip install --upgrade pip setuptools wheel
	$(VENV310)/bin/python -m pip install -e ".[sim]" pytest pytest-timeout hypothesis
	touch $@

test-py310: $(VENV310)/.installed
	$(VENV310)/bin/python -m pytest test/unit test/integration $(PYTEST_ARGS)

# The declared floors (.ci/floors.txt: setup.py's lower bounds of numpy, scipy, osqp, pin,
# onnxruntime, safetensors, pyyaml, pinned exactly) in a virtualenv of their own, and the torch-free
# core's tests on them: a floor the code does not run on fails here, not on a user's machine.
# The pins are the lowest releases with CPython 3.11 wheels; another interpreter may lack some.
PYFLOORS ?= python3.11
VENVFLOORS ?= .venv-floors
$(VENVFLOORS)/.installed: setup.py .ci/floors.txt
	$(PYFLOORS) -m venv $(VENVFLOORS)
	$(VENVFLOORS)/bin/python -m pip install --upgrade pip setuptools wheel
	$(VENVFLOORS)/bin/python -m pip install --only-binary=:all: -c .ci/floors.txt \
	    -e ".[sim]" pytest pytest-timeout hypothesis
	$(VENVFLOORS)/bin/python -m pip install --only-binary=:all: -r .ci/floors.txt
	$(VENVFLOORS)/bin/python -m pip check
	touch $@

test-floors: $(VENVFLOORS)/.installed
	$(VENVFLOORS)/bin/python -m pytest test/unit test/integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check diffusion_controller test launch
