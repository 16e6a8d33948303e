# mado-server image, built from the repository root:
#   docker build -f infra/server.Dockerfile -t mado-server .
FROM rust:1-bookworm AS build
WORKDIR /src
# native codecs build from source: CharLS (cmake, g++), libjpeg-turbo (cmake, nasm)
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nasm \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p server --bin mado-server

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/mado-server /usr/local/bin/mado-server
# mado-data/ holds the audit head file ([audit] head_file), a volume in compose.yaml.
RUN mkdir -p /var/lib/mado/mado-data && chown 65532:65532 /var/lib/mado/mado-data
WORKDIR /var/lib/mado
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["mado-server"]
CMD ["serve"]
