# oretrace API server image.
#
# Serves `oretrace serve --host 0.0.0.0 --port 8000` against the MongoDB named
# by MONGODB_URI (a replica set: publications use multi-document transactions).
# The embedded database (SecantusDB, GPL-2.0) is NOT installed in this image:
# the image ships only Apache-2.0-compatible components, and production uses a
# real MongoDB replica set anyway.
#
#   docker build -t oretrace .
#   docker run -p 8000:8000 \
#     -e MONGODB_URI='mongodb://mongo-0,mongo-1,mongo-2/?replicaSet=rs0' \
#     -e ORETRACE_ROOT_PUBLIC_KEY=<64 hex chars> \
#     -e ORETRACE_NETWORK=my-network \
#     oretrace

# ---------------------------------------------------------------- builder
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first (better layer caching), then the project itself as a wheel.
COPY pyproject.toml README.md ./
COPY supervision ./supervision
COPY crypto ./crypto
COPY ledger ./ledger
COPY api ./api
COPY resolvers ./resolvers
COPY sdk ./sdk
RUN pip install --upgrade pip wheel \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && pip install /wheels/*.whl

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORETRACE_DATA_DIR=/var/lib/oretrace

RUN groupadd --system oretrace \
 && useradd --system --gid oretrace --home-dir /var/lib/oretrace --shell /usr/sbin/nologin oretrace \
 && mkdir -p /var/lib/oretrace \
 && chown oretrace:oretrace /var/lib/oretrace

COPY --from=builder /opt/venv /opt/venv

USER oretrace
WORKDIR /var/lib/oretrace
EXPOSE 8000

# /livez answers 200 while the process serves HTTP (restart it otherwise); /readyz
# (= /healthz) also writes and reads the database, for a load balancer's readiness
# probe. No curl in a slim image: the interpreter does the request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4).status == 200 else 1)"]

# MONGODB_URI, ORETRACE_NETWORK and ORETRACE_ROOT_PUBLIC_KEY come from the environment
# (docker run -e / orchestrator secrets); so does ORETRACE_LOG_KEY, the transparency
# log's checkpoint key (hex seed): without it one is generated in the data directory,
# which must then be a persistent volume (docs/log.md, docs/operations.md).
CMD ["oretrace", "serve", "--host", "0.0.0.0", "--port", "8000"]
