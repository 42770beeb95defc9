# One image for every Python part of Conway: each demo service, the load generator, the demo
# control API, the collector and the dashboard. docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code edits do not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code runs from /app (editable install): catalog/topology.yaml is found next to it.
COPY collector ./collector
COPY dashboard ./dashboard
COPY demo_services ./demo_services
COPY catalog ./catalog
COPY deploy/healthcheck.py ./deploy/healthcheck.py
COPY scripts/page_console.py ./scripts/page_console.py
RUN pip install --no-deps -e . \
    && useradd --system --uid 10001 --no-create-home --home-dir /app conway \
    && mkdir -p /data \
    && chown conway /data

USER conway
# collector (OTLP/HTTP + API), dashboard, demo control API, demo services
EXPOSE 4318 8050 8100 8101-8112
CMD ["python", "-m", "collector", "--host", "0.0.0.0", "--port", "4318"]
