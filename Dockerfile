# The l2l service (`l2l serve`): FastAPI + uvicorn, meta-training in worker processes, the job
# store and the embedded MLflow store on the /data volume (or MLflow at MLFLOW_TRACKING_URI).
#
#   docker build -t l2l-plugin .
#   docker run -p 127.0.0.1:8000:8000 -v l2l-data:/data -e L2L_API_TOKEN=... l2l-plugin
#
# compose.yaml runs it beside an mlflow server with a PostgreSQL backend.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
RUN python -m venv /opt/venv

# The pins of the README's commands (make install: pip -c constraints.txt). torch comes from the
# CPU-only index: the default Linux wheel bundles CUDA libraries (gigabytes) a CPU image never uses.
# TORCH_FIND_LINKS: a folder of wheels mounted into the build (deploy/image-smoke passes the
# host's CPU wheel where no download of torch is possible).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
COPY constraints.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" ${TORCH_FIND_LINKS:+--find-links "${TORCH_FIND_LINKS}"} -c constraints.txt torch

# The same distributions as requirements.txt, without its test tools; postgres extra for compose.
COPY pyproject.toml README.md ./
COPY l2l_plugin ./l2l_plugin
COPY plugins ./plugins
COPY registry ./registry
COPY api ./api
RUN pip install -c constraints.txt \
        . \
        ./plugins/quadratic \
        ./plugins/mnist_data \
        ./plugins/mnist_mlp \
        ./plugins/mnist_conv \
        ./plugins/neural_art \
        ./registry \
        "./api[postgres]"

# An unprivileged user owns the data directory (and the artifact folder compose mounts for mlflow).
RUN groupadd --gid 10001 l2l \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin l2l \
    && mkdir -p /data /mlartifacts \
    && chown 10001:10001 /data /mlartifacts
USER 10001:10001
WORKDIR /home/l2l

ENV L2L_API_DATA_DIR=/data \
    L2L_API_HOST=0.0.0.0 \
    L2L_API_PORT=8000 \
    L2L_API_WORKERS=1 \
    MLFLOW_DISABLE_TELEMETRY=true
VOLUME ["/data"]
EXPOSE 8000

# Liveness: /health answers 200 while the API is up (its body says whether MLflow and the workers are).
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('L2L_API_PORT', '8000'), timeout=8)"]

ENTRYPOINT ["l2l"]
CMD ["serve"]
