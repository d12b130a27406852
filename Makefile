# qilin: `make run` and `make test` set everything up themselves (a private .venv from
# pyproject.toml) and then do their job. Nothing relies on what was installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

GPULINE := .venv-gpuline
GPULINE_STAMP := $(GPULINE)/.installed-stamp

.PHONY: run test test-gpu-line gpu-check lab bench lint venv prometheus chromium clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name qilin --display-name "Python (qilin)" >/dev/null
	@touch $(STAMP)

## The main job: the research pipeline on the embedded synthetic market and a LocalCluster.
run: $(STAMP)
	$(BIN)/qilin warmup --if-needed
	$(BIN)/qilin run pipelines/research.yaml --cluster local

## Every test, against real Dask clusters, a real Jupyter kernel and a real Prometheus.
test: $(STAMP) prometheus chromium
	$(BIN)/ruff check qilin tests benchmarks
	$(BIN)/qilin warmup --if-needed
	$(BIN)/python -m pytest

## The CPU suite again under the versions the `gpu` extra (RAPIDS line) resolves to
## (ci/gpu-line-constraints.txt), in its own venv and numba cache; CI runs it after `test`.
$(GPULINE_STAMP): pyproject.toml ci/gpu-line-constraints.txt
	@test -x $(GPULINE)/bin/python || $(PYTHON) -m venv $(GPULINE)
	$(GPULINE)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(GPULINE)/bin/python -m pip install --quiet -c ci/gpu-line-constraints.txt -e '.[dev]'
	$(GPULINE)/bin/python -m ipykernel install --sys-prefix --name qilin --display-name "Python (qilin)" >/dev/null
	@touch $(GPULINE_STAMP)

test-gpu-line: $(GPULINE_STAMP) prometheus chromium
	$(GPULINE)/bin/python -c "import dask, numba, pandas; print('gpu line:', 'dask', dask.__version__, 'numba', numba.__version__, 'pandas', pandas.__version__)"
	NUMBA_CACHE_DIR=$(CURDIR)/.numba-gpuline $(GPULINE)/bin/qilin warmup --if-needed
	NUMBA_CACHE_DIR=$(CURDIR)/.numba-gpuline $(GPULINE)/bin/python -m pytest --ignore=tests/test_gpu_extra.py

## On a machine with an NVIDIA GPU: the GPU tests on the device and the W1/W2/W4 GPU figures.
gpu-check: $(STAMP)
	sh scripts/gpu-check.sh

## Debian's chromium for the report pages' browser tests (installed once when missing).
chromium:
	@sh scripts/ensure-chromium.sh

## Debian's prometheus and promtool for the monitoring tests (installed once when missing).
prometheus:
	@sh scripts/ensure-prometheus.sh

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) --MappingKernelManager.default_kernel_name=qilin

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check qilin tests benchmarks
	$(BIN)/ruff format --check qilin tests benchmarks || true

clean:
	rm -rf $(VENV) $(GPULINE) .numba-gpuline .pytest_cache .ruff_cache .qilin_cache
