# Loa image: one image for every role (API, worker, scheduler, migrations); the command picks it.
#   docker build -t loa .
#   docker run --rm -v loa-data:/data loa db upgrade        # embedded mode: SQLite in /data
#   docker run --rm -v loa-data:/data loa demo --dir /app/demo
#   docker run --rm -p 8000:8000 -v loa-data:/data loa
# See docker-compose.yml for the PostgreSQL setup with separate roles.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home loa \
    && mkdir -p /app /data \
    && chown loa:loa /data

WORKDIR /app

# Dependencies first, in their own layer, so a code change does not reinstall them: the runtime
# dependencies listed in pyproject.toml, pinned by the lock (used as constraints).
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c requirements.lock -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
RUN pip install -c requirements.lock . \
    && rm -rf build *.egg-info

USER loa
ENV LOA_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000

ENTRYPOINT ["loa"]
CMD ["serve", "--host", "0.0.0.0"]
