# chat-history service image.
#
#   docker build -t chat-history:dev .
#   docker build --build-arg BASE_IMAGE=chat-history/base:bookworm --network=host -t chat-history:ci .
#
# BASE_IMAGE is any Debian bookworm image with python3 (>= 3.11) and its venv module. Behind a
# TLS-intercepting proxy, use a base that trusts the proxy's CA and sets PIP_CERT (see
# helm/chat-history/README.md, "Building the image behind a proxy").
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the pinned dependencies, then the service code -----------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# Dependency layer: changes only with pyproject.toml or constraints.txt, not with the code.
# Wheels only, so no compiler is needed here either; versions come from the constraints file.
# EXTRAS adds optional dependency groups of pyproject.toml, e.g. --build-arg EXTRAS=openai for
# CHAT_MODEL=openai.
ARG EXTRAS=""
COPY pyproject.toml constraints.txt ./
RUN python3 -c 'import os, tomllib; \
project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [name.strip() for name in os.environ["EXTRAS"].split(",") if name.strip()]; \
print("\n".join(project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]))' \
    > requirements.txt
RUN /opt/venv/bin/pip install --only-binary=:all: -c constraints.txt -r requirements.txt
# Code layer: the service itself, installed without dependencies so that its package metadata
# (and so its version) is there; the hop check that `helm test` runs ships in it too. README.md belongs to that metadata; the glob, next to a file
# that always matches, and the `touch` keep a tree without it building. Then the installers
# leave the venv (the image runs, it does not install), and bytecode is compiled here because
# the running container's root filesystem is read-only.
COPY pyproject.toml README.m[d] /src/
COPY chat_history_k8s/ /src/chat_history_k8s/
RUN touch README.md \
    && /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- runtime: the venv, the code, a non-root user; no pip cache, no compilers ----------------
FROM ${BASE_IMAGE}
ARG UID=10001
RUN groupadd --gid "${UID}" app \
    && useradd --no-log-init --uid "${UID}" --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# PATH in full: an image made with `docker import` may have none to extend.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# `uvicorn service.main:app` (DESIGN.md's start command) works here too: the shim (service/)
# sits in the working directory, outside the venv, so the wheel never installs a `service` package.
COPY service/ /app/service/
WORKDIR /app
USER ${UID}:${UID}
EXPOSE 8000
# Exec form: uvicorn is PID 1 and gets SIGTERM directly; it then drains in-flight requests for
# up to 20 s (the chart's terminationGracePeriodSeconds is longer than preStop + that). --http:
# uvicorn's HTTP/1.1 protocol with deadlines for slow or half-sent requests and a cap on the
# request head (chat_history_k8s/protocol.py; limits in docs/configuration.md).
CMD ["uvicorn", "chat_history_k8s.main:app", "--http", "chat_history_k8s.protocol:GuardedHttpProtocol", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "20"]
