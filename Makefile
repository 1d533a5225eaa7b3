# normlab: `make demo` and `make test` do all the set-up on a fresh machine.
#
# The venv gets torch first, then the package, so pip never resolves a bare
# `torch` (which would pull a multi-GB CUDA build). Override TORCH_SPEC for
# another build, e.g. on a machine with an NVIDIA GPU:
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= test,plot
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

.PHONY: demo test bench venv clean

venv: $(STAMP)

# Rebuilt when the package's declared dependencies change.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Real Fashion-MNIST, the book's BN-LeNet, 5 epochs with a cosine schedule: about a minute on 2 cores.
demo: $(STAMP)
	$(VENV)/bin/normlab data summary fashion-mnist
	$(VENV)/bin/normlab train lenet_bn --epochs 5 --schedule cosine --out runs/demo

# ruff first (pyproject.toml [tool.ruff]): a lint error stops the run before the tests
test: $(STAMP)
	$(VENV)/bin/ruff check
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/data_loading.py
	$(PY) benchmarks/norm_layers.py --quick
	$(PY) benchmarks/training_throughput.py
	$(PY) benchmarks/d2l_book.py
	$(PY) benchmarks/distributed.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
