# The image the Helm chart (helm/tern) runs: tern-server (any set of
# services on Kafka, CQL and Redis), ternd (embedded) and the tern CLI.
#   docker build -t ghcr.io/tern-im/tern:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# librdkafka is built from source by the rdkafka crate (C toolchain, make and
# perl come with the rust image); protobuf is compiled by protox (no protoc).
RUN cargo build --release --locked --bin tern-server --bin ternd --bin tern

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tern-server /src/target/release/ternd /src/target/release/tern /usr/local/bin/
# The chart runs as this user with a read-only root file system; scratch
# space is /var/lib/tern.
RUN mkdir -p /var/lib/tern && chown 10001:10001 /var/lib/tern
USER 10001:10001
ENV TERN_DATA_DIR=/var/lib/tern
EXPOSE 7400 7401 7402 7403
CMD ["tern-server"]
