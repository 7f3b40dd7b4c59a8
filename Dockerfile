# Clinic Auth as a container image: built with cargo in one stage, run from
# a slim Debian image as an unprivileged user in the other.
#
#   docker build -t clinic-auth .
#   docker run -p 8000:8000 -v clinic-auth-data:/var/lib/clinic-auth/data clinic-auth
#
# docker-compose.yml runs it next to MongoDB and mongo-express. The image is
# not built in CI (no Docker engine there): tests/deploy.rs lints this file
# with hadolint instead.

# ---- build -------------------------------------------------------------------
# The toolchain the tests run on (Cargo.toml's rust-version, 1.89, is the
# floor), on the same Debian release as the runtime image so the OpenSSL
# the binary links against (webauthn-rs) is the one installed there.
FROM rust:1.95-slim-bookworm AS build

# Debian's package versions are not pinned (DL3008): bookworm's security
# updates replace them, and a pinned version then no longer installs.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Everything the build reads: the manifest and lock file, the code, and what
# is compiled into the binary (SQL migrations, templates, CSS, images, JS).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY src ./src
RUN cargo build --release --locked --bin clinic-auth

# ---- run ---------------------------------------------------------------------
FROM debian:bookworm-slim

# libssl3 for webauthn-rs; ca-certificates for TLS to the mail server and to
# MongoDB (mongodb+srv://, tls=true). Unpinned for the reason given above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 clinic \
    && useradd --system --uid 10001 --gid clinic --no-create-home \
        --home-dir /var/lib/clinic-auth --shell /usr/sbin/nologin clinic \
    && mkdir -p /var/lib/clinic-auth/data \
    && chown -R clinic:clinic /var/lib/clinic-auth \
    && chmod 0700 /var/lib/clinic-auth/data

COPY --from=build /src/target/release/clinic-auth /usr/local/bin/clinic-auth

# The defaults put everything the service writes under data/ in the working
# directory: the SQLite database (DATABASE_URL), generated development
# secrets and the audit checkpoints (DATA_DIR), the email outbox
# (MAIL_OUTBOX_DIR). That directory is the volume, so it outlives the
# container.
WORKDIR /var/lib/clinic-auth
VOLUME ["/var/lib/clinic-auth/data"]

# Listen on every interface of the container, not only its loopback.
ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000

# By number: the host and an orchestrator can check it is not root (runAsNonRoot).
USER 10001:10001

# No curl in a slim image: the binary asks its own /health (on HOST:PORT,
# loopback for 0.0.0.0) and exits 0 for a 200. 503 while the database cannot
# be reached or written, so a MongoDB outage shows as unhealthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["clinic-auth", "health"]

# SIGTERM (docker stop) lets in-flight requests finish and exits 0.
ENTRYPOINT ["clinic-auth"]
CMD ["serve"]
