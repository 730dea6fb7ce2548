# npay-billing: the two commands a new user needs are `make run` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# The suite runs on TEST_WORKERS processes (pytest-xdist; each starts its own redis-server,
# PostgreSQL cluster and sandbox on free ports): 8 min on 2 cores instead of 14. 0 = one process.
TEST_WORKERS ?= 2

.PHONY: install test soak run lint bench clean

install: $(STAMP)

# Installs exactly the versions in constraints.txt (generated with `pip freeze`), so CI and a
# fresh clone get what the tests were run with; pyproject.toml keeps the allowed ranges.
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The property-based suite with many more random examples (tests/property/conftest.py);
# SOAK_EXAMPLES per property, failures kept in .hypothesis/ and replayed first next time.
SOAK_EXAMPLES ?= 300
soak: $(STAMP)
	HYPOTHESIS_PROFILE=soak HYPOTHESIS_MAX_EXAMPLES=$(SOAK_EXAMPLES) $(PY) -m pytest tests/property \
		--hypothesis-show-statistics -rxX --timeout=0 $(PYTEST_ARGS)

run: $(STAMP)
	bash scripts/run.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check models scheduler worker sandbox tests bench celeryconfig.py
	$(VENV)/bin/mypy models scheduler worker sandbox

# Issue 8's benchmarks, quick sizes (bench/RESULTS.md has the full commands); on a quiet machine.
bench: $(STAMP)
	$(PY) bench/bench_charge_cpu.py --charges 300
	$(PY) bench/bench_charge_cpu.py --charges 300 --postgres
	$(PY) bench/bench_e2e.py --subscriptions 1000
	$(PY) bench/bench_e2e.py --latency-ms 300 --processes 2 --threads 32 --no-client --subscriptions 1500
	$(PY) bench/bench_spike.py --subscriptions 20000 --walk-only
	$(PY) bench/bench_rate_limit.py

clean:
	rm -rf $(VENV) var/*.db var/redis
