# The image the Helm chart in charts/tandem runs: Tandem's compiled programs under /app,
# with the demo models. Not built on the development machine (it has no container engine).
# Node 24 (LTS): Node 20 is past its end of life, and from 22.1 on node keeps a compile cache
# of the modules a program loads (under /tmp, a volume in the chart), which cuts startup.
#
# Stage 1 builds every package (npm ci runs the `prepare` script: tsc -b, then the servers'
# bundles, each package's dist/bundle/).
FROM node:24-bookworm-slim AS build
WORKDIR /src
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY . .
RUN npm ci --no-audit --no-fund

# Stage 2: production dependencies and compiled JavaScript only; no TypeScript at run time.
FROM node:24-bookworm-slim
WORKDIR /app
# No MALLOC_MMAP_THRESHOLD_ here: the chart sets it on the workers that drop experts
# (expertParallel; runtime/src/engine/expert-cache.ts, FREED_MEMORY_ENV), as it slows
# every other process's prefill. GLIBC_TUNABLES: malloc's large blocks in transparent huge
# pages (runtime/src/engine/huge-pages.ts, HUGE_PAGES_ENV).
ENV NODE_ENV=production \
    ONNXRUNTIME_NODE_INSTALL=skip \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1
COPY --from=build /src/package.json /src/package-lock.json ./
COPY --from=build /src/common/package.json common/
COPY --from=build /src/proto/package.json proto/
COPY --from=build /src/cluster/package.json cluster/
COPY --from=build /src/runtime/package.json runtime/
COPY --from=build /src/edge-agent/package.json edge-agent/
COPY --from=build /src/services/cloud-worker/package.json services/cloud-worker/
COPY --from=build /src/services/control-plane/package.json services/control-plane/
COPY --from=build /src/services/batch-worker/package.json services/batch-worker/
COPY --from=build /src/testkit/package.json testkit/
COPY --from=build /src/bench/package.json bench/
COPY --from=build /src/cli/package.json cli/
# --ignore-scripts: the compiled code is copied below, so `prepare` (tsc) must not run here.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/bin ./bin
COPY --from=build /src/proto/tandem ./proto/tandem
COPY --from=build /src/proto/grpc ./proto/grpc
COPY --from=build /src/common/dist ./common/dist
COPY --from=build /src/proto/dist ./proto/dist
COPY --from=build /src/cluster/dist ./cluster/dist
COPY --from=build /src/runtime/dist ./runtime/dist
COPY --from=build /src/edge-agent/dist ./edge-agent/dist
COPY --from=build /src/services/cloud-worker/dist ./services/cloud-worker/dist
COPY --from=build /src/services/control-plane/dist ./services/control-plane/dist
COPY --from=build /src/services/batch-worker/dist ./services/batch-worker/dist
COPY --from=build /src/testkit/dist ./testkit/dist
COPY --from=build /src/bench/dist ./bench/dist
COPY --from=build /src/cli/dist ./cli/dist
COPY --from=build /src/models ./models
# The chart runs as uid 1000 with a read-only root filesystem; graphs go to /cache (a volume).
USER 1000:1000
CMD ["node", "/app/bin/tandem.mjs", "--help"]
