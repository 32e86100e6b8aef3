# The envrun worker. Build: docker build -t envrun-worker .
FROM node:20.18.1-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git bubblewrap openssh-client tar ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY contracts ./contracts
COPY workflows ./workflows
COPY activities ./activities
COPY worker ./worker
COPY client ./client
COPY scripts ./scripts
COPY bin ./bin
# Workflows bundled ahead of time: workers start fast and run exactly this code.
RUN npx tsx scripts/bundle-workflows.ts dist/workflow-bundle.js
ENV ENVRUN_WORKFLOW_BUNDLE=/app/dist/workflow-bundle.js \
    ENVRUN_DATA_DIR=/var/lib/envrun \
    NODE_ENV=production
USER node
# One process: node with the tsx loader (not `npx tsx`, which adds two more processes).
CMD ["node", "--import", "tsx", "worker/main.ts"]
