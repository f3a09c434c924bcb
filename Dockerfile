# syntax=docker/dockerfile:1
# Ghostream on Alpine: small image, unprivileged user, configuration mounted read-only.
#   scripts/image alpine        (or: docker build -t ghostream:alpine .)
#   docker run -p 9710:9710/udp -p 1935:1935 -p 8080:8080 -p 10000-10005:10000-10005/udp -p 10000:10000/tcp \
#       -p 2112:2112 -e GHOSTREAM_WEBRTC_PUBLICIPS=HOST_IP \
#       -v ./ghostream.yml:/etc/ghostream/ghostream.yml:ro -v ghostream-data:/var/lib/ghostream ghostream:alpine
# Both base images are build arguments, as in Dockerfile.debian.

ARG PYTHON_IMAGE=docker.io/library/python:3.11-alpine
ARG NODE_IMAGE=docker.io/library/node:20-alpine

FROM ${NODE_IMAGE} AS player
WORKDIR /app/ghostream/web
COPY ghostream/web/package.json ghostream/web/package-lock.json ./
# The CA bundle of a TLS-intercepting proxy, when scripts/image passes one, is a secret, not a layer.
RUN --mount=type=secret,id=cacert \
    if [ -f /run/secrets/cacert ]; then export NPM_CONFIG_CAFILE=/run/secrets/cacert; fi \
    && npm ci --omit=dev --no-audit --no-fund

FROM ${PYTHON_IMAGE} AS build
WORKDIR /app
# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN --mount=type=secret,id=cacert \
    if [ -f /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
    && python3 -m venv /venv \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /venv/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY setup.py README.md ./
COPY ghostream ghostream
COPY --from=player /app/ghostream/web/node_modules/hls.js ghostream/web/node_modules/hls.js
COPY --from=player /app/ghostream/web/node_modules/uplot ghostream/web/node_modules/uplot
# The wheel, not the source tree: the image runs what `pip install` gives users.
RUN --mount=type=secret,id=cacert \
    if [ -f /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
    && /venv/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels . \
    && /venv/bin/pip install --no-cache-dir --disable-pip-version-check /wheels/*.whl \
    && /venv/bin/pip uninstall --yes --quiet pip setuptools \
    && find /venv -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
RUN adduser -D -H -u 10001 ghostream \
    && mkdir -p /etc/ghostream /var/lib/ghostream \
    && chown ghostream /var/lib/ghostream
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GHOSTREAM_HISTORY_PATH=/var/lib/ghostream/history.sqlite3
USER ghostream
VOLUME /var/lib/ghostream
EXPOSE 9710/udp 1935/tcp 1936/tcp 8080/tcp 10000-10005/udp 10000/tcp 2112/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD wget -q -O /dev/null http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["ghostream"]
CMD ["run"]
