# One image for every regsandbox component: sandbox-operator, `sandboxctl audit serve`,
# `sandboxctl gateway serve`. Build: docker build -t regsandbox:dev .
# (The project's CI machines have no Docker engine; this file is kept simple and checked
# by review, not by a build.)

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY sandbox ./sandbox
COPY operators ./operators
COPY audit ./audit
RUN python -m venv /opt/regsandbox \
 && /opt/regsandbox/bin/pip install --upgrade pip \
 && /opt/regsandbox/bin/pip install .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="regsandbox" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="Confidential-data regulatory sandboxes on Kubernetes"
# regopy's native library (the embedded policy engine) links libatomic.so.1, which the
# slim image lacks. The local image build (sandbox/devenv/images.py) runs ldd over every
# shared object of the venv and names any library the image is missing.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libatomic1 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 regsandbox \
 && useradd --system --uid 10001 --gid regsandbox --home-dir /nonexistent --shell /usr/sbin/nologin regsandbox
COPY --from=build /opt/regsandbox /opt/regsandbox
# The built-in Rego policies and their data, found by the operator at this path.
COPY policies /opt/regsandbox/policies
# OPA's compiler, which the embedded engine runs on every policy set before accepting it
# (REGSANDBOX_OPA_CHECK_BINARY): regopy accepts some rules OPA refuses.
COPY --from=openpolicyagent/opa:1.22.3-static /opa /usr/local/bin/opa
ENV PATH=/opt/regsandbox/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REGSANDBOX_POLICY_DIR=/opt/regsandbox/policies \
    REGSANDBOX_OPA_CHECK_BINARY=/usr/local/bin/opa
USER 10001:10001
ENTRYPOINT []
CMD ["sandbox-operator", "run"]
