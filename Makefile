# The two commands the README leads with. Both set up .venv themselves (scripts/bootstrap.sh).
VENV ?= .venv
CONFIG ?= configs/default.yaml
export VENV

.PHONY: serve test bootstrap cluster bench bench-engine bench-http bench-ramp bench-soak

bootstrap:
	@scripts/bootstrap.sh

serve: bootstrap
	$(VENV)/bin/qwen3-serve serve --config $(CONFIG) $(ARGS)

test: bootstrap
	$(VENV)/bin/python -m pytest -ra --durations=25 $(ARGS)

# The CPU chart's RayService on a local head + two worker nodes started by KubeRay's rules (tests/kuberay.py).
cluster: bootstrap
	$(VENV)/bin/python -m tests.kuberay $(ARGS)

# bench: the engine benchmark, then the HTTP benchmark (peers' venvs are built on first use).
bench: bench-engine bench-http

bench-engine: bootstrap
	$(VENV)/bin/python -m benchmarks.engine_bench $(ARGS)

bench-http: bootstrap
	$(VENV)/bin/python -m benchmarks.http_bench $(ARGS)

# Autoscaling under a load ramp (configs/cpu-autoscale.yaml): JSON + PNG in benchmarks/results/.
bench-ramp: bootstrap
	$(VENV)/bin/python -m benchmarks.ramp $(ARGS)

# Memory over a long run at saturation, e.g. make bench-soak ARGS="--duration-s 1800 --malloc tcmalloc".
bench-soak: bootstrap
	$(VENV)/bin/python -m benchmarks.soak $(ARGS)
