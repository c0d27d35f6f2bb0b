# mistral-serve on GPU nodes: this server on top of vLLM's own CUDA image (same vLLM, 0.32.0).
#
#   docker build -t mistral-serve:0.1.0 .
#   docker run --gpus all -p 8000:8000 --shm-size 16g -v /models:/models:ro \
#     -v mserve-cache:/cache mistral-serve:0.1.0 \
#     --preset mistral-small-3.2-24b-instruct-2506 \
#     --model /models/Mistral-Small-3.2-24B-Instruct-2506
#
# Everything after the image name is passed to `python3 -m server` (see docs/deployment.md), e.g.
# `--api-processes 2` (or -e MSERVE_API_PROCESSES=2) for two API processes over one engine core.
# The entrypoint is exec-form: the server is PID 1 and gets `docker stop`'s SIGTERM itself (with
# several API processes it forwards it to them so they drain; the engine core stops last).
FROM vllm/vllm-openai:v0.32.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The image's vLLM, torch and CUDA stack stay as they are: the constraints file pins every
# package already installed, so adding our dependencies can never move them. mistral-common is
# the one exception: it is left out of the constraints because vLLM 0.32's Mistral grammar code
# needs exactly 1.12.0 (see pyproject.toml), whatever the image shipped. So are the packages with
# security floors (fastapi/starlette, h11, orjson, pillow: see pyproject.toml): an image that
# ships an older release gets the fixed one.
# fastapi, uvicorn, pydantic, pyyaml, jsonschema, pillow and httpx normally come with vLLM already; then pip
# keeps the image's versions.
RUN python3 -m pip --version >/dev/null 2>&1 || python3 -m ensurepip --upgrade; \
    python3 -m pip freeze --all \
      | grep -v -i -E '^(mistral[-_]common|fastapi|starlette|h11|orjson|pillow|pip|setuptools|wheel)==| @ |^-e ' \
      > /tmp/image-constraints.txt \
    && python3 -m pip install --no-cache-dir -c /tmp/image-constraints.txt \
      "mistral-common==1.12.0" \
      "fastapi>=0.115" \
      "starlette>=0.49.1" \
      "uvicorn[standard]>=0.30" \
      "h11>=0.16" \
      "pydantic>=2.7" \
      "orjson>=3.9.15" \
      "pyyaml>=6" \
      "jsonschema>=4.20" \
      "pillow>=11.3" \
      "httpx>=0.27" \
      "psycopg[binary]>=3.1" \
    && rm /tmp/image-constraints.txt

# The project itself. It is installed in editable mode on purpose: the server finds its model
# presets relative to its own package (server/settings.py: ROOT / "configs" / "presets"), so the
# code must run from this tree, not from a copy in site-packages.
WORKDIR /opt/mistral-serve
COPY pyproject.toml ./
COPY server ./server
COPY parsers ./parsers
COPY configs ./configs
RUN python3 -m pip install --no-cache-dir --no-deps -e . \
    && python3 -c "import server.settings as s; assert s.PRESETS_DIR.is_dir(), s.PRESETS_DIR"

# Non-root user that also works under an arbitrary UID (OpenShift restricted SCC): the runtime UID
# is always in group 0, so HOME and every cache directory are owned by group 0 and group-writable,
# and HOME/USER are set here instead of being looked up in /etc/passwd (an arbitrary UID has no
# entry; torch's getpass.getuser() then falls back to $USER).
ARG APP_UID=10001
RUN useradd --uid "${APP_UID}" --gid 0 --home-dir /home/mserve --create-home \
      --shell /usr/sbin/nologin mserve \
    && mkdir -p /cache/huggingface /cache/vllm /cache/triton /cache/torchinductor \
       /cache/flashinfer /cache/mistral-serve \
    && chgrp -R 0 /home/mserve /cache \
    && chmod -R g=u /home/mserve /cache
ENV HOME=/home/mserve \
    USER=mserve \
    LOGNAME=mserve \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    HF_HUB_OFFLINE=1 \
    VLLM_CACHE_ROOT=/cache/vllm \
    TRITON_CACHE_DIR=/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/cache/torchinductor \
    FLASHINFER_WORKSPACE_BASE=/cache/flashinfer \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
# One volume for every cache: compiled torch/Triton kernels and the embedded tiny model survive
# restarts when it is a named volume or a PVC. Weights are mounted separately (read-only).
VOLUME ["/cache"]

USER ${APP_UID}:0
EXPOSE 8000

# Liveness only: /health answers as soon as HTTP is up (before the model has loaded). Readiness
# is GET /ready (200 once the engine is loaded); orchestrators should probe that for traffic.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MSERVE_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["python3", "-m", "server"]
CMD []
