# The envrun worker. Build: docker build -t envrun-worker .
# Node 24 LTS on Debian 12 (bookworm), the Debian release the project is tested on.

# Build: the compiled JavaScript (dist/, `npm run build`) and the workflow bundle, then the dev
# dependencies (TypeScript, tsx) pruned away.
FROM node:24.11.1-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# `prepare` skips its build here (no sources yet); the build runs below, once they are copied.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY contracts ./contracts
COPY config ./config
COPY store ./store
COPY drivers ./drivers
COPY leases ./leases
COPY lib ./lib
COPY workflows ./workflows
COPY activities ./activities
COPY worker ./worker
COPY client ./client
COPY scripts ./scripts
# Workflows bundled ahead of time: workers start fast and run exactly this code.
RUN npm run build \
 && node dist/scripts/bundle-workflows.js dist/workflow-bundle.js \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:24.11.1-bookworm-slim
# bubblewrap (and slirp4netns, for its `outbound` network) for the bubblewrap sandbox provider; prlimit,
# which it also runs, is in util-linux, part of every Debian image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git bubblewrap slirp4netns openssh-client tar ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY --chmod=0755 deploy/worker-entrypoint.sh /usr/local/bin/envrun-worker-entrypoint
# The data folder (sandboxes, provider state) belongs to the worker's user. Made here, before VOLUME, so a
# fresh named volume mounted on it starts with this ownership instead of root's.
RUN mkdir -p /var/lib/envrun && chown node:node /var/lib/envrun
VOLUME /var/lib/envrun
# MALLOC_ARENA_MAX=2: glibc keeps fewer malloc arenas for the worker's threads (Temporal Core's, libuv's, the
# workflow thread's), 10-25 MB less resident memory when idle (docs/benchmarks.md, "Worker memory").
ENV ENVRUN_WORKFLOW_BUNDLE=/app/dist/workflow-bundle.js \
    ENVRUN_DATA_DIR=/var/lib/envrun \
    MALLOC_ARENA_MAX=2 \
    NODE_ENV=production
USER node
# The entrypoint names the host (ENVRUN_HOST_ID, default the container's hostname) and says at start
# whether bubblewrap sandboxes can run in this container, then execs the command: one node process.
ENTRYPOINT ["envrun-worker-entrypoint"]
CMD ["node", "dist/worker/main.js"]
