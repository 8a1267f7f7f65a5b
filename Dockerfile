# Postern container images: static binaries (CGO_ENABLED=0; the SQLite
# driver is pure Go) on distroless/static, running as the non-root user
# 65532. Targets:
#   docker build -t postern-relay .                        # the relay (default)
#   docker build -t postern-agent --target agent .
#   docker build -t postern-demotarget --target demotarget .  # demo service for examples/compose.yaml
# Running them: docs/operations.md#containers.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=none
ARG DATE=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" \
      -o /out/ ./cmd/postern-relay ./cmd/postern-agent ./scripts/demotarget \
 && mkdir -p /state/var/lib/postern-relay /state/var/lib/postern-agent

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
# State directories owned by the runtime user, so named volumes mounted
# there start out writable by it.
COPY --from=build --chown=65532:65532 /state/ /
USER 65532:65532

FROM runtime AS demotarget
COPY --from=build /out/demotarget /usr/local/bin/demotarget
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/demotarget"]
CMD ["--listen", ":8090"]

FROM runtime AS agent
COPY --from=build /out/postern-agent /usr/local/bin/postern-agent
VOLUME /var/lib/postern-agent
ENTRYPOINT ["/usr/local/bin/postern-agent"]
CMD ["run", "--config", "/etc/postern/agent.yaml"]

FROM runtime AS relay
COPY --from=build /out/postern-relay /usr/local/bin/postern-relay
COPY examples/relay.yaml /etc/postern-relay/relay.yaml
VOLUME /var/lib/postern-relay
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/postern-relay"]
CMD ["serve", "--config", "/etc/postern-relay/relay.yaml"]
# /readyz: 200 while the node takes traffic, 503 while it starts, drains
# or has lost its store.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/postern-relay", "health", "--url", "http://127.0.0.1:8080/readyz"]
