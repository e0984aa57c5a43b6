FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin conveyor

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/conveyor /usr/local/bin/conveyor
ENTRYPOINT ["conveyor"]
CMD ["all"]
