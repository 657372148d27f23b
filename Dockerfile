# fleetgate gateway image. Build: docker build -t fleetgate .
# Run (the CA's public files + server cert/key mounted read-only, data in a volume):
#   docker run --read-only -v $PWD/certs-gw:/etc/fleetgate/ca:ro -v fleetgate-data:/var/lib/fleetgate \
#     -p 8883:8883 -p 8443:8443 fleetgate
# docs/operations.md, "Deploy with Docker", says what goes in /etc/fleetgate/ca.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY ca ca
COPY gateway gateway
COPY firmware-sim firmware-sim
RUN python -m venv /opt/fleetgate \
 && /opt/fleetgate/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/fleetgate/bin/pip install --no-cache-dir .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="fleetgate" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged user; the data volume is the only place it writes.
RUN groupadd --system --gid 10001 fleetgate \
 && useradd --system --uid 10001 --gid fleetgate --home-dir /var/lib/fleetgate fleetgate \
 && install -d -o fleetgate -g fleetgate -m 0700 /var/lib/fleetgate \
 && install -d -m 0755 /etc/fleetgate/ca
COPY --from=build /opt/fleetgate /opt/fleetgate
ENV PATH=/opt/fleetgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER fleetgate
VOLUME ["/var/lib/fleetgate"]
EXPOSE 8883 8443
# Liveness: /healthz answers without a client certificate; the server chain is verified.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["python", "-c", \
  "import ssl,urllib.request as u; c=ssl.create_default_context(cafile='/etc/fleetgate/ca/root.crt'); c.check_hostname=False; u.urlopen('https://127.0.0.1:8443/healthz', context=c, timeout=4)"]
ENTRYPOINT ["fleet-gateway"]
CMD ["serve", "--ca-home", "/etc/fleetgate/ca", "--data", "/var/lib/fleetgate", \
     "--mqtt", "0.0.0.0:8883", "--http", "0.0.0.0:8443"]
