# syntax=docker/dockerfile:1
# Metagov gateway image: `docker build -t metagov .`, then
#   docker run -p 8000:8000 -v metagov-data:/app/data -e METAGOV_DRIVER_API_KEY=... metagov
# Without METAGOV_DATABASE_URL it keeps its SQLite database in /app/data (mount a volume there).
# deploy/compose.yaml runs the production topology from this image.
#
# Reproducible: the base image is pinned to an exact release (the Python the tests run on; move
# both together), and every Python package, the build backend included, is installed at the
# version constraints.txt locks.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# --- builder: install metagov and its dependencies into a virtualenv -----------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /build
# The wheel is built with hatchling from pyproject.toml; README.md is its long description and the
# top-level migrations/ directory is packaged into it as metagov/migrations. The backend comes
# from the lock too (no build isolation, which would fetch whatever hatchling is newest).
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY src ./src
COPY migrations ./migrations
RUN pip install -c constraints.txt hatchling \
    && pip wheel --no-build-isolation --wheel-dir /wheels --no-deps . \
    && pip install -c constraints.txt "$(ls /wheels/metagov-*.whl)[otel]"

# --- final: the virtualenv, a non-root user, nothing else ------------------------------------------
FROM ${PYTHON_IMAGE}

RUN groupadd --system metagov \
    && useradd --system --gid metagov --home-dir /app --no-create-home metagov \
    && mkdir -p /app/data \
    && chown -R metagov:metagov /app

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METAGOV_DATABASE_URL="sqlite+aiosqlite:////app/data/metagov.db"

WORKDIR /app
USER metagov
VOLUME ["/app/data"]
EXPOSE 8000

# The slim image has no curl; Python's standard library does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["metagov", "serve", "--host", "0.0.0.0", "--port", "8000"]
