# The two commands the README leads with. Both set up .venv themselves (scripts/bootstrap.sh).
VENV ?= .venv
CONFIG ?= configs/default.yaml
export VENV

.PHONY: serve test bootstrap bench

bootstrap:
	@scripts/bootstrap.sh

serve: bootstrap
	$(VENV)/bin/qwen3-serve serve --config $(CONFIG) $(ARGS)

test: bootstrap
	$(VENV)/bin/python -m pytest -ra $(ARGS)

bench: bootstrap
	$(VENV)/bin/python -m benchmarks.engine_bench $(ARGS)
