# airflow-mlops: make demo | make test | make bench | make up | make up-prod | make lint
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW_CONFIG ?= $(CURDIR)/airflow.cfg
export MLOPS_DATA_DIR ?= $(CURDIR)/data
export MLOPS_MLFLOW_DIR ?= $(CURDIR)/.mlflow
# Embedded default: MLflow tracking and registry in a SQLite file, artifacts on local disk.
export AIRFLOW_CONN_MLFLOW_DEFAULT ?= {"conn_type": "mlflow", "extra": {"tracking_uri": "sqlite:///$(MLOPS_MLFLOW_DIR)/mlflow.db", "artifact_location": "$(MLOPS_MLFLOW_DIR)/artifacts"}}
export PATH := $(VENV)/bin:$(PATH)
export GIT_PYTHON_REFRESH := quiet

.PHONY: demo test test-all bench bench-scale evaluate up down up-prod down-prod lint data install clean

$(STAMP): requirements.txt requirements-dev.txt docker/requirements-deploy.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# requirements-deploy: the PostgreSQL drivers and the Celery provider of the production topology (make up-prod).
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -r docker/requirements-deploy.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	# The build leaves plugins/airflow_mlops.egg-info; plugins/ is on sys.path in Airflow, so the package would be
	# found twice and its plugin entry point registered twice. The installed dist-info is the one that counts.
	rm -rf plugins/*.egg-info
	$(PY) -c "import torch, mlflow, great_expectations, evidently, airflow, pandas; print('dependencies import: ok')"
	touch $(STAMP)

install: $(STAMP)

$(MLOPS_DATA_DIR)/rainfall/rainfall.parquet: include/datasets/build_rainfall.py | $(STAMP)
	$(PY) include/datasets/build_rainfall.py --out $@

$(MLOPS_DATA_DIR)/digits/digits.parquet: include/datasets/build_digits.py | $(STAMP)
	$(PY) include/datasets/build_digits.py --out $@

$(MLOPS_DATA_DIR)/diabetes/diabetes.parquet: include/datasets/build_diabetes.py | $(STAMP)
	$(PY) include/datasets/build_diabetes.py --out $@

$(MLOPS_DATA_DIR)/flights/flights.parquet: include/datasets/build_flights.py | $(STAMP)
	$(PY) include/datasets/build_flights.py --out $@

$(MLOPS_DATA_DIR)/weather/weather.parquet: include/datasets/build_weather.py include/datasets/build_flights.py | $(STAMP)
	$(PY) include/datasets/build_weather.py --out $@

data: $(MLOPS_DATA_DIR)/rainfall/rainfall.parquet $(MLOPS_DATA_DIR)/digits/digits.parquet \
      $(MLOPS_DATA_DIR)/diabetes/diabetes.parquet

$(AIRFLOW_HOME)/airflow.db: | $(STAMP)
	mkdir -p $(AIRFLOW_HOME) $(MLOPS_MLFLOW_DIR)
	airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -30 $(AIRFLOW_HOME)/db-migrate.log; exit 1)

demo: install data $(AIRFLOW_HOME)/airflow.db
	mkdir -p $(MLOPS_MLFLOW_DIR)
	airflow dags test train_pipeline --conf '$(or $(CONF),{})' > $(AIRFLOW_HOME)/demo.log 2>&1; \
	  rc=$$?; grep -E "Window |Suite |\[rank0\] (Training|epoch [0-9]+/[0-9]+ done|Committed)|evaluation on|Registered|Alias|Gate rejected|ERROR|DagRun Finished" $(AIRFLOW_HOME)/demo.log \
	  | sed -E -e 's/ +\[(airflow|task)[^]]*\] +loc=.*$$//' -e 's/^[0-9T:.-]+Z +//' | cut -c1-220; \
	  if [ $$rc -ne 0 ]; then tail -40 $(AIRFLOW_HOME)/demo.log; exit $$rc; fi
	$(PY) include/scripts/demo_summary.py
	@echo "== Continual learning: drift_monitor quarter by quarter, continual_learning when the policy triggers"
	$(PY) include/scripts/continual_demo.py --start $(or $(DEMO_FROM),1981-01-01) --quarters $(or $(DEMO_QUARTERS),10) \
	  > $(AIRFLOW_HOME)/continual-demo.log 2>&1 || (tail -60 $(AIRFLOW_HOME)/continual-demo.log; exit 1)
	@grep -vE "^\[?[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]|^ |^Traceback|^$$" $(AIRFLOW_HOME)/continual-demo.log | grep -E "^[0-9]{4}-[0-9]{2}\.\.|^\||^Policy" || true

test: install
	$(PY) -m pytest

bench: install data
	$(PY) benchmarks/run.py

# Tables larger than memory (10M x 50, streaming vs in memory vs the bare libraries): about an hour on two cores.
bench-scale: install
	nice $(PY) benchmarks/run.py scale

up: install data $(AIRFLOW_HOME)/airflow.db
	$(PY) include/scripts/stack.py up

down:
	$(PY) include/scripts/stack.py down

# The production topology natively: PostgreSQL, Redis, S3 (moto), MLflow server, Airflow with CeleryExecutor
# and two workers (MLOPS_WORKERS), the services docker/compose.yaml deploys. Needs postgresql and redis-server (apt).
up-prod: install
	$(PY) include/scripts/topology.py up

down-prod:
	$(PY) include/scripts/topology.py down

evaluate: install data $(MLOPS_DATA_DIR)/flights/flights.parquet $(MLOPS_DATA_DIR)/weather/weather.parquet
	$(PY) benchmarks/evaluate_policies.py --data-dir $(MLOPS_DATA_DIR) --out benchmarks/results/policies.json
	$(PY) benchmarks/policy_tables.py benchmarks/results/policies.json --readme README.md

lint: install
	$(PY) -m ruff check plugins dags tests benchmarks include

clean:
	rm -rf $(AIRFLOW_HOME) $(MLOPS_MLFLOW_DIR) $(MLOPS_DATA_DIR)
