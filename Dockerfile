# Ghostream on Alpine: small image, unprivileged user, configuration mounted read-only.
#   docker build -t ghostream .
#   docker run -p 9710:9710/udp -p 8080:8080 -p 10000-10005:10000-10005/udp -p 10000:10000/tcp -p 2112:2112 \
#       -v ./ghostream.yml:/etc/ghostream/ghostream.yml:ro -v ghostream-data:/var/lib/ghostream ghostream

FROM node:20-alpine AS player
WORKDIR /app/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-alpine AS build
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ghostream ghostream
COPY migrations migrations
COPY web/templates web/templates
COPY web/static web/static
COPY --from=player /app/web/node_modules/hls.js/dist/hls.min.js web/node_modules/hls.js/dist/hls.min.js
RUN python -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --disable-pip-version-check -e . \
    && find /venv -name __pycache__ -prune -exec rm -rf {} +

FROM python:3.11-alpine
RUN adduser -D -H -u 10001 ghostream \
    && mkdir -p /etc/ghostream /var/lib/ghostream \
    && chown ghostream /var/lib/ghostream
COPY --from=build /venv /venv
COPY --from=build /app /app
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GHOSTREAM_HISTORY_PATH=/var/lib/ghostream/history.sqlite3
USER ghostream
VOLUME /var/lib/ghostream
EXPOSE 9710/udp 8080/tcp 10000-10005/udp 10000/tcp 2112/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD wget -q -O /dev/null http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["ghostream"]
CMD ["run"]
