# The two commands the README leads with. Both set up .venv themselves (scripts/bootstrap.sh).
VENV ?= .venv
CONFIG ?= configs/default.yaml
export VENV

.PHONY: serve test bootstrap bench bench-engine bench-http

bootstrap:
	@scripts/bootstrap.sh

serve: bootstrap
	$(VENV)/bin/qwen3-serve serve --config $(CONFIG) $(ARGS)

test: bootstrap
	$(VENV)/bin/python -m pytest -ra $(ARGS)

# bench: the engine benchmark, then the HTTP benchmark (peers' venvs are built on first use).
bench: bench-engine bench-http

bench-engine: bootstrap
	$(VENV)/bin/python -m benchmarks.engine_bench $(ARGS)

bench-http: bootstrap
	$(VENV)/bin/python -m benchmarks.http_bench $(ARGS)
