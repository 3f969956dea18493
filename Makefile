# The two promises: `make run` brings the whole platform up on embedded PostgreSQL and NATS
# (pip wheels, nothing else to install) and `make test` passes, on a machine with only
# Python 3.11+ and make. uv is bootstrapped into .tools/ from plain python3.

PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
PY     := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

TENANT ?= acme
ROLE   ?= admin
SUB    ?= user-1
TEAMS  ?=
PYTEST_ARGS ?=
# Test files run in parallel processes (each with its own PostgreSQL and NATS): the suite
# waits on I/O far more than it computes.
TEST_WORKERS ?= 4
MEMBERS := libs/chassis proto services/contacts services/pipeline services/tickets services/commissions services/campaigns gateway
SRC_DIRS := libs/chassis/src services/contacts/src services/pipeline/src services/tickets/src \
            services/commissions/src services/campaigns/src gateway/src

.PHONY: help install run test lint fmt proto proto-check k8s-validate bench load demo token migrate clean

help:
	@echo "make run | test | lint | fmt | proto | proto-check | bench | load | demo | token TENANT=acme ROLE=admin | clean"

$(UV):
	@$(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/pip install -q --disable-pip-version-check "uv==0.13.9"

$(VENV)/.synced: $(UV) uv.lock pyproject.toml $(addsuffix /pyproject.toml,$(MEMBERS))
	@$(UV) sync --all-packages --locked -q --python "$$(command -v $(PYTHON))"
	@touch $@

install: $(VENV)/.synced

run: install
	@$(PY) -m chassis.devstack run

migrate: install
	@$(PY) -m chassis.devstack migrate

token: install
	@$(PY) -m chassis.devstack token --tenant "$(TENANT)" --role "$(ROLE)" --sub "$(SUB)" --teams "$(TEAMS)"

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MYPYPATH=proto/src $(VENV)/bin/mypy $(SRC_DIRS) proto/src/crm/registry.py \
	    deploy/k8s/validate.py deploy/docker/migrate.py
	bash scripts/check_deps.sh

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

proto: install
	bash scripts/proto.sh gen
	bash scripts/proto.sh lint
	$(PY) scripts/asyncapi.py

proto-check: install
	bash scripts/proto.sh lint
	bash scripts/proto.sh check
	$(PY) scripts/asyncapi.py --check
	bash scripts/proto.sh breaking

k8s-validate: install
	bash scripts/k8s_validate.sh

bench: install
	$(PY) bench/run.py

# 10 minutes of mixed traffic against a fresh local stack (LOAD_DURATION=90s for a short run)
load: install
	$(PY) load/run.py

demo: install
	@$(PY) scripts/demo.py

clean:
	rm -rf .data $(VENV) $(TOOLS) .mypy_cache .ruff_cache
