# qilin: `make run` and `make test` set everything up themselves (a private .venv from
# pyproject.toml) and then do their job. Nothing relies on what was installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

.PHONY: run test lab bench lint venv prometheus clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name qilin --display-name "Python (qilin)" >/dev/null
	@touch $(STAMP)

## The main job: the research pipeline on the embedded synthetic market and a LocalCluster.
run: $(STAMP)
	$(BIN)/qilin run pipelines/research.yaml --cluster local

## Every test, against real Dask clusters, a real Jupyter kernel and a real Prometheus.
test: $(STAMP) prometheus
	$(BIN)/ruff check qilin tests benchmarks
	$(BIN)/python -m pytest

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
	rm -rf $(VENV) .pytest_cache .ruff_cache .qilin_cache
