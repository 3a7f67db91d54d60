# meshmeter: one image for every role (telemetry server, sidecar, capture init container,
# injector). Build: docker build -t meshmeter/meshmeter:0.1.0 .
#
# Stage 1 builds a static binary (musl, ring's C parts with musl-gcc); stage 2 is a small Debian
# base that adds only iptables, which `meshmeter capture` drives through iptables-restore (nft
# and legacy back ends). Every container runs as the non-root user 65532 except the capture
# init container, which `meshmeter inject` runs as root with NET_ADMIN and NET_RAW only.
# `--target static` gives a FROM-scratch image for the telemetry server and injector alone.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p meshmeter \
    && install -D -m 0755 target/x86_64-unknown-linux-musl/release/meshmeter /out/meshmeter

FROM scratch AS static
COPY --from=build /out/meshmeter /meshmeter
USER 65532:65532
ENTRYPOINT ["/meshmeter"]

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 meshmeter \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin meshmeter
COPY --from=build /out/meshmeter /usr/local/bin/meshmeter
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshmeter"]
