# nncompress: one image for the API, the Celery workers and the migration step (docker-compose.yml).
#
#   docker build -t nncompress:cpu --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> .
#   docker build -t nncompress:cuda --build-arg TORCH_VARIANT=cu128 \
#       --build-arg TORCH_INDEX_URL=<PyTorch cu128 wheel index> .
# Without TORCH_INDEX_URL, torch comes from the default index (on Linux that is a CUDA build).
#
# The default command is the API; compose runs the worker and `alembic upgrade head` from the same image.
# Settings come from the environment: DATABASE_URL, BROKER_URL, NNCOMPRESS_STORAGE_DIR, NNCOMPRESS_*.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- builder: a virtualenv with torch (CPU or CUDA build) and the project's wheel + service and models
# extras (torchvision, timm, transformers: the architectures users upload by name or as HF directories) ----
FROM ${PYTHON_IMAGE} AS builder
# cpu, or a CUDA tag of the PyTorch wheel index (cu126, cu128, ...). The CUDA wheels bring their own
# CUDA libraries; the host only needs the NVIDIA driver and container toolkit.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch and torchvision first, from the index of the chosen variant, so resolving the project never pulls
# another build (torchvision must be the build made for that torch, or its operators fail to load).
# TORCH_VARIANT labels the build (compose checks that GPU workers get a CUDA one).
RUN if [ -n "${TORCH_INDEX_URL}" ]; then export PIP_INDEX_URL="${TORCH_INDEX_URL}"; fi \
    && echo "torch ${TORCH_VERSION} (${TORCH_VARIANT})" \
    && pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY pyproject.toml README.md ./
COPY nncompress ./nncompress
COPY core ./core
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /dist . \
    && pip install "$(ls /dist/nncompress-*.whl)[service,models,mlflow]"

# ---- runtime: the virtualenv, the Alembic files, a non-root user; no compilers, no pip cache ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NNCOMPRESS_STORAGE_DIR=/data/storage
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin nncompress \
    && mkdir -p /app /data/storage \
    && chown -R nncompress:nncompress /app /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# `alembic upgrade head` (the compose migrate step) reads ./alembic.ini, whose script_location is ./migrations.
COPY alembic.ini ./
COPY migrations ./migrations
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# The image has no curl: probe /healthz with the interpreter it already has.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
