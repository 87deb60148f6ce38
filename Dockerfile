# syntax=docker/dockerfile:1.7
# Drehscheibe node image: non-root, slim, read-only-root-filesystem friendly.
#
# Build (the eCH XSDs live beside the repository, in ../shared/ech, and come in as a named
# build context; nothing else outside the repository is read):
#   docker build --build-context ech=../shared/ech -t drehscheibe:0.1.0 .
# Run: mount node.toml at /etc/drehscheibe/node.toml, keys read-only, and a writable
# volume at /var/lib/drehscheibe (store, audit log). See docs/deployment.md.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
# A virtualenv at the same path as in the final image, so its scripts keep working when copied.
RUN python -m venv /opt/drehscheibe \
 && /opt/drehscheibe/bin/pip install --upgrade pip \
 && /opt/drehscheibe/bin/pip install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="drehscheibe" \
      org.opencontainers.image.description="Drehscheibe node: secured eCH/sedex data exchange" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"
# libpq5: the PostgreSQL client library the (pure-Python) psycopg driver loads for [store] backend = "postgresql".
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 \
 && rm -rf /var/lib/apt/lists/*
# SECURITY: a fixed, unprivileged UID/GID (the Helm chart's runAsUser/fsGroup) without a login shell.
RUN groupadd --system --gid 10001 drehscheibe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/drehscheibe --no-create-home \
            --shell /usr/sbin/nologin drehscheibe \
 && mkdir -p /etc/drehscheibe /var/lib/drehscheibe \
 && chown 10001:10001 /var/lib/drehscheibe \
 && chmod 0750 /var/lib/drehscheibe
COPY --from=build /opt/drehscheibe /opt/drehscheibe
COPY --from=ech xsd /usr/share/drehscheibe/ech/xsd
# No bytecode written at run time (the root filesystem is read-only); unbuffered JSON logs.
ENV PATH=/opt/drehscheibe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/drehscheibe
VOLUME ["/var/lib/drehscheibe"]
# 8443 node-to-node (mTLS), 9443 local REST API (HTTPS), 9100 /metrics /healthz /readyz (HTTP)
EXPOSE 8443 9443 9100
STOPSIGNAL SIGTERM
ENTRYPOINT ["drehscheibe", "node", "run", "--config", "/etc/drehscheibe/node.toml"]
