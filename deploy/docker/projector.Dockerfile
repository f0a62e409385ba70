# syntax=docker/dockerfile:1.7
# khala-projector image. Build from the repository root (the uv workspace):
#   docker build -f deploy/docker/projector.Dockerfile -t khala-projector .
# Run: `khala-projector serve` (default) or `khala-projector migrate`; configuration is
# environment only (docs/architecture.md). Non-root (uid 10001), works with a
# read-only root filesystem (bytecode is compiled at build time).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: resolve the locked dependencies of khala-projector into /app/.venv ----
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first: this layer is reused until uv.lock or a
# manifest changes. uv reads every workspace member's manifest.
COPY pyproject.toml uv.lock ./
COPY libs/khala-proto/pyproject.toml libs/khala-proto/
COPY libs/khala-common/pyproject.toml libs/khala-common/
COPY services/control/pyproject.toml services/control/
COPY services/runtime/pyproject.toml services/runtime/
COPY services/projector/pyproject.toml services/projector/
COPY services/khala-gateway/pyproject.toml services/khala-gateway/
COPY clients/python/pyproject.toml clients/python/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package khala-projector
# Then the workspace packages khala-projector needs, installed as wheels
# (--no-editable) so /app/.venv does not refer back to /src.
COPY libs/khala-proto/ libs/khala-proto/
COPY libs/khala-common/ libs/khala-common/
COPY services/projector/ services/projector/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package khala-projector \
 && test -x /app/.venv/bin/khala-projector \
 && /app/.venv/bin/python -c "import khala_projector.__main__"

# ---- runtime: the virtualenv on a clean base, as an unprivileged user ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="khala-projector" \
      org.opencontainers.image.description="Khala projector service" \
      org.opencontainers.image.source="https://github.com/openagents/khala"
RUN groupadd --system --gid 10001 khala \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin khala
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KHALA_BIND_HOST=0.0.0.0 \
    KHALA_PROJECTOR_HTTP_PORT=8083 \
    KHALA_PROJECTOR_GRPC_PORT=9083
USER 10001:10001
WORKDIR /app
EXPOSE 8083 9083
# Images ship no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('KHALA_PROJECTOR_HTTP_PORT', '8083'), timeout=2)"]
ENTRYPOINT ["khala-projector"]
CMD ["serve"]
