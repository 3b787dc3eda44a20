# The image the Helm chart in charts/tandem runs: Tandem's programs under /app, with the
# demo models. Not built on the development machine (it has no container engine); the
# file list is checked by running the programs from exactly these files (see README).
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
    ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY proto ./proto
COPY runtime ./runtime
COPY shared ./shared
COPY services ./services
COPY edge-agent ./edge-agent
COPY cli ./cli
COPY models ./models
# The chart runs as uid 1000 with a read-only root filesystem; graphs go to /cache, tsx's
# compile cache to /tmp (both volumes).
USER 1000:1000
CMD ["node", "/app/bin/tandem.mjs", "--help"]
