# syntax=docker/dockerfile:1
#
# runbook-exporter container image.
#
#   docker build --build-arg VERSION="$(python3 -c 'import exporter; print(exporter.__version__)')" \
#     --build-arg REVISION="$(git rev-parse HEAD)" -t runbook-exporter .
#   docker run --read-only -p 9883:9883 \
#     -v "$PWD/runbook-exporter.yml:/etc/runbook-exporter/config.yml:ro" \
#     -e APP_DB_PASSWORD runbook-exporter
#
# The configuration is read from /etc/runbook-exporter/config.yml (mount it read-only).
# Secrets come from the environment (password_env / dsn_env in the config) or from mounted
# files (password_file, e.g. /run/secrets/db-password). Nothing is written at runtime, so the
# container runs with a read-only root filesystem. See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a wheel of the exporter, then a virtualenv with it and its dependencies --------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY exporter/ exporter/
# shipped in the wheel beside the code (setup.py maps them into the package)
COPY docs/runbooks/ docs/runbooks/
COPY alerts/alertmanager.yml alerts/
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
    && python -m venv /opt/runbook-exporter \
    && /opt/runbook-exporter/bin/pip install --no-cache-dir /dist/runbook_exporter-*.whl \
    && /opt/runbook-exporter/bin/pip uninstall --yes pip setuptools

# --- runtime: slim Python, the virtualenv, a non-root user, nothing written at runtime -----
FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=

LABEL org.opencontainers.image.title="runbook-exporter" \
      org.opencontainers.image.description="Prometheus exporter for PostgreSQL job queues, database health and app health endpoints, with alert rules that encode real runbooks" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --no-log-init --uid 10001 --gid exporter \
       --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin exporter

# Bytecode was compiled at install time; never try to write .pyc files at runtime.
ENV PATH="/opt/runbook-exporter/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=build /opt/runbook-exporter /opt/runbook-exporter

USER 10001:10001
EXPOSE 9883

# No curl in the slim image: ask /-/healthy with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9883/-/healthy', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["runbook-exporter"]
CMD ["--config.file=/etc/runbook-exporter/config.yml"]
