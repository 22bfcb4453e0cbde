# minillm course. The README's two commands: `make book` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
# torch: the CPU wheel by default; on a GPU machine keep your own (see README, "GPU users").
TORCH_SPEC ?= torch==2.13.0
NOTEBOOKS := $(sort $(wildcard notebooks/*/*.ipynb))
EXERCISES := $(sort $(wildcard exercises/*.ipynb))
WHEELHOUSE ?= wheelhouse
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: venv venv-offline constraints book lab test lint pytest nbval book-build browser execute exercises test-gpu wheelhouse bench clean

venv: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	  else $(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# pin what the venv has now (after upgrading something on purpose); torch and its dependencies stay free
constraints: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^-e\|@ file' | \
	  grep -viE '^(torch|triton|nvidia-|sympy|mpmath|networkx|filelock|fsspec|setuptools|typing_extensions|pip|wheel)[=-]'; \
	} > constraints.tmp && mv constraints.tmp constraints.txt

book: $(STAMP)
	rm -rf _build/html _build/.doctrees
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "book: file://$(CURDIR)/_build/html/index.html"

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=.

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(PY) tools/vendor_js.py --check

pytest: $(STAMP)
	$(BIN)/pytest -q -m "not browser and not book" -n 2 tests

nbval: $(STAMP)
	OMP_NUM_THREADS=1 MINILLM_DEVICE=cpu $(BIN)/pytest -q --nbval-lax -n 2 --dist loadscope -p no:cacheprovider $(NOTEBOOKS) $(EXERCISES)

# MINILLM_INSTALL_BROWSER=1 (as root): let the browser test apt-get install a missing chromium (CI sets it)
MINILLM_INSTALL_BROWSER ?=
browser: book
	MINILLM_INSTALL_BROWSER=$(MINILLM_INSTALL_BROWSER) $(BIN)/pytest -q -m "book or browser" tests

# everything CI runs; the last line is pytest's summary of the browser test
test: lint pytest nbval browser

execute: $(STAMP)
	$(PY) tools/execute_notebooks.py

exercises: $(STAMP)
	$(PY) tools/build_exercises.py

test-gpu:
	@test -x $(PY) || (echo "no $(VENV): run 'make venv' (online) or 'make venv-offline WHEELHOUSE=...' first" && exit 2)
	$(PY) -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu needs a CUDA GPU that torch can see')"
	MINILLM_DEVICE=cuda $(BIN)/pytest -q --nbval-lax -p no:cacheprovider $(NOTEBOOKS) $(EXERCISES)
	MINILLM_DEVICE=cuda $(PY) -m minillm.bench --out _build/bench-gpu.md

# wheels for an offline GPU machine, made on a machine with internet:
#   make wheelhouse WHEEL_PYTHON=3.11 WHEEL_PLATFORM=manylinux_2_28_x86_64 WHEEL_TORCH="torch==2.13.0"
# PyPI's Linux torch wheel is the CUDA build; copy $(WHEELHOUSE)/ over, then `make venv-offline && make test-gpu`.
WHEEL_PYTHON ?= 3.11
WHEEL_PLATFORM ?= manylinux_2_28_x86_64
WHEEL_TORCH ?= $(TORCH_SPEC)
wheelhouse:
	mkdir -p $(WHEELHOUSE)
	$(PYTHON) tools/requirements.py --no-torch > $(WHEELHOUSE)/requirements.txt
	echo "$(WHEEL_TORCH)" >> $(WHEELHOUSE)/requirements.txt
	$(PYTHON) -m pip download -d $(WHEELHOUSE) --only-binary=:all: --python-version $(WHEEL_PYTHON) \
	  --platform $(WHEEL_PLATFORM) --platform manylinux2014_x86_64 --platform linux_x86_64 --platform any \
	  -r $(WHEELHOUSE)/requirements.txt -c constraints.txt
	$(PYTHON) -m pip download -d $(WHEELHOUSE) --only-binary=:all: --python-version $(WHEEL_PYTHON) \
	  --platform any "setuptools>=77" wheel
	@echo "copy $(WHEELHOUSE)/ to the GPU machine, then: make venv-offline WHEELHOUSE=$(WHEELHOUSE) && make test-gpu"

venv-offline:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-index --find-links $(WHEELHOUSE) -r $(WHEELHOUSE)/requirements.txt
	$(PY) -m pip install --no-index --find-links $(WHEELHOUSE) --no-build-isolation --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

bench: $(STAMP)
	$(PY) -m minillm.bench

clean:
	rm -rf _build .pytest_cache
