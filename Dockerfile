# syntax=docker/dockerfile:1
# Clinic Gateway: a multi-stage build.
#   build:   the workspace, compiled with the README's build command
#            (`cargo build --release -p clinic-gateway`), so the two cannot drift;
#   runtime: debian:bookworm-slim (same glibc as the build image), the binary, the template
#            library, curl for the health check, and a non-root user.
# Build: docker build --build-arg GIT_SHA=$(git rev-parse --short HEAD) -t clinic-gateway .
# Run:   docker run -p 8080:8080 -e CLINIC_GATEWAY__REDIS__URL=redis://redis:6379 clinic-gateway
# (or `docker compose up`, see docker-compose.yml and the README's "Operating it").

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Shown by clinic_gateway_build_info{git_sha}.
ARG GIT_SHA=unknown
ENV CLINIC_GATEWAY_GIT_SHA=${GIT_SHA}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p clinic-gateway \
    && install -m 0755 target/release/clinic-gateway /usr/local/bin/clinic-gateway

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --shell /usr/sbin/nologin gateway
WORKDIR /app
COPY --from=build /usr/local/bin/clinic-gateway /usr/local/bin/clinic-gateway
# `templates.dir` defaults to config/templates, read from the working directory.
COPY config/templates /app/config/templates
COPY config/production.example.toml /etc/clinic-gateway/gateway.example.toml
USER 10001:10001
# Listen on every interface inside the container; Redis is named by the deployment.
ENV CLINIC_GATEWAY__SERVER__BIND=0.0.0.0:8080 \
    RUST_LOG=info
# 8080: HTTP (API, webhooks, /metrics, /healthz, /readyz); 2575: MLLP when mllp.enabled.
EXPOSE 8080 2575
# Liveness: the process answers HTTP. Readiness (Redis reachable) is /readyz: docker-compose.yml
# and orchestrators probe it separately.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/clinic-gateway"]
CMD ["serve"]
