# Lifeline's services (ingest, processor, writer): one image, the command picks the service.
# The install step is the project's own: the same constraints.txt and pip command as
# scripts/bootstrap.sh (tests/deploy/test_deploy.py checks they stay the same).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY schemas ./schemas
COPY services ./services
COPY simulators ./simulators
# grafana-client pulls in urllib3-future, whose .pth start-up hook replaces the urllib3 package
# in site-packages with itself whenever Python starts and site-packages is writable (it is in
# .venv, where the tests run). Starting Python once here, as root, makes the image the same as
# the tested environment; at run time the non-root user cannot change site-packages.
RUN python -m venv /opt/lifeline \
 && /opt/lifeline/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt . \
 && /opt/lifeline/bin/python -c "import urllib3, sys; sys.exit(0 if hasattr(urllib3, 'HTTPConnectionPool') else 1)"

FROM python:3.11-slim-bookworm
# The reports' PDF and plots embed a CJK font (fonts-noto-cjk, found through fontconfig).
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      fonts-noto-cjk fontconfig \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /app --create-home lifeline \
 && mkdir -p /var/lib/lifeline/reports && chown lifeline /var/lib/lifeline/reports
COPY --from=build /opt/lifeline /opt/lifeline
COPY deploy/registry /app/deploy/registry
WORKDIR /app
# Kafka's and MQTT's CA (docker-compose mounts deploy/clients here).
RUN mkdir -p /etc/lifeline/tls
USER lifeline
ENV PATH=/opt/lifeline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LIFELINE_STATE_DIR=/app/state \
    LIFELINE_REGISTRY=/app/deploy/registry/wenzhou-bay.yaml
# Each service serves GET /health on its LIFELINE_<SERVICE>_HEALTH_PORT (0.0.0.0 in compose).
HEALTHCHECK --interval=15s --timeout=3s --start-period=40s --retries=3 \
  CMD python -c "import os,sys,urllib.request; p=os.environ.get('HEALTH_PORT','8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{p}/health', timeout=2).status == 200 else 1)"
ENTRYPOINT ["lifeline"]
CMD ["--help"]
