# The two set-up commands of the README. Both install what they need first
# (scripts/bootstrap.sh: Debian packages with apt-get, then .venv with constraints.txt).
.PHONY: setup run test lint unit integration bench clean

setup:
	@scripts/bootstrap.sh

## The main job on the local stack (simulators → MQTT → Faust → InfluxDB → alarms). Ctrl-C stops.
run: setup
	.venv/bin/lifeline run

## Everything CI runs: lint, types, unit and integration tests, benchmark smoke tests.
test: setup lint
	.venv/bin/pytest -q

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

unit: setup
	.venv/bin/pytest -q tests/unit

integration: setup
	.venv/bin/pytest -q tests/integration

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
