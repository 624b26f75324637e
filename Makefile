# The two set-up commands of the README. Both install what they need first
# (scripts/bootstrap.sh: Debian packages with apt-get, then .venv with constraints.txt).
.PHONY: setup setup-python run test lint audit unit integration long bench clean

setup:
	@scripts/bootstrap.sh

## The virtual environment only (no Debian packages): enough for lint and the unit tests.
setup-python:
	@scripts/bootstrap.sh --python-only

## The main job on the local stack (simulators → MQTT → Faust → InfluxDB → alarms). Ctrl-C stops.
run: setup
	.venv/bin/lifeline run

## Everything CI runs: lint, types, known vulnerabilities of the pinned dependencies, unit and
## integration tests, benchmark smoke tests.
test: setup lint audit
	.venv/bin/pytest -q --durations=15

lint: setup-python
	.venv/bin/ruff check .
	.venv/bin/mypy

## pip-audit of constraints.txt: fails on a known vulnerability; where no vulnerability source
## can be reached it prints one line saying it skipped and why, and the test command goes on
## (LIFELINE_AUDIT_STRICT=1 makes that a failure, for a CI that must audit).
audit: setup
	.venv/bin/python deploy/audit_dependencies.py constraints.txt

## Unit tests only: no system packages, no stack (about 3 minutes).
unit: setup-python
	.venv/bin/pytest -q -m unit

integration: setup
	.venv/bin/pytest -q -m integration

## The long runs CI skips (scenarios through the pipeline, marker `long`), on demand.
long: setup
	LIFELINE_LONG_TESTS=1 .venv/bin/pytest -q -m long

## Full benchmarks (minutes); results go to docs/benchmarks.md by hand, with the machine.
bench: setup
	.venv/bin/python -m tests.bench.run all
	.venv/bin/python -m tests.bench.processor
	.venv/bin/python -m tests.bench.writer
	.venv/bin/python -m tests.bench.notifier
	.venv/bin/python -m tests.bench.query
	.venv/bin/python -m tests.bench.simulator

clean:
	rm -rf .lifeline .venv .mypy_cache .ruff_cache .pytest_cache
