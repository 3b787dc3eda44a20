/**
 * A cloud worker: the upper segment [split, L) of a checkpoint behind the CloudWorker
 * gRPC service, with its context manager and decode batcher.
 */
import { readFileSync } from "node:fs";
import {
  checkPlaintextListen,
  isWorkerCertificate,
  loadTandemProtos,
  type RunningServer,
  type ServerTlsFiles,
  startGrpcServer,
  withUndecodedRequests,
} from "@tandem/proto";
import {
  DEFAULT_ESCALATION_LIMITS,
  cloudSegmentSpec,
  HostRoutedMoeModel,
  type Int4HeadBits,
  loadCheckpoint,
  SegmentModel,
  type SegmentRunner,
  SegmentSessions,
  warnUnlessFreedMemoryReturned,
  type WeightFormat,
  splitIdentityOf,
} from "@tandem/runtime";
import type { NatsCredentials } from "@tandem/cluster";
import {
  HOST_PORT_PATTERN,
  hostPort,
  InvalidArgumentError,
  listenAddressParts,
  type Logger,
  type Progress,
} from "@tandem/common";
import type { Registry } from "@tandem/common/metrics";
import { ContextManager } from "./context-manager.ts";
// Loaded only by a worker that joins a cluster: a standalone one never loads the NATS client.
import type { ClusterMembership } from "./cluster-membership.ts";
import { DecodeBatcher, DEFAULT_DECODE_BATCHER_OPTIONS } from "./decode-batcher.ts";
import {
  DEFAULT_SESSION_LIMITS,
  emptyWorkerCounters,
  escalationHandlers,
  maxMessageBytes,
  type SessionLimits,
  type WorkerCounters,
} from "./escalation-service.ts";
import type { WorkerMetrics } from "./worker-metrics.ts";
import { ExpertParallelism, type ExpertParallelismOptions } from "./expert-parallelism.ts";
import { expertsHandlers, type ExpertsServiceCounters, maxExpertRequestBytes } from "./experts-service.ts";

export interface CloudWorkerOptions {
  modelDir: string;
  split: number;
  workerId: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  memoryBudgetBytes?: number;
  threads?: number;
  batching?: boolean;
  /** Most sessions in one batched step, and the rows of each KV pool. @default 16 */
  maxBatch?: number;
  /** Positions one step runs (DecodeBatcherOptions.stepTokenBudget). @default 256 */
  stepTokenBudget?: number;
  weightFormat?: WeightFormat;
  /** Values per quantization block of int8/int4 weights (SegmentSpec.quantBlockSize). @default 32 */
  quantBlockSize?: number;
  /** Bits of an int4 LM head (SegmentSpec.int4HeadBits). @default 8 */
  int4HeadBits?: Int4HeadBits;
  /**
   * MoE: run experts where the expert map places them (this worker's in-process, others'
   * over Experts/Run) and hold only this worker's. With `tls`, Experts takes mutual TLS from
   * workers' certificates only, and this worker calls the others with its own. @default every expert here
   */
  expertParallel?: Omit<ExpertParallelismOptions, "tls"> & {
    /**
     * Port of the Experts service, a server of its own on `host` so that only other workers
     * reach it (the chart's network policy), never the devices of the public port. @default 0 (a free port)
     */
    port?: number;
  };
  cacheDir?: string;
  /** Mutual TLS with devices: this worker's certificate and the deployment's CA. @default plaintext */
  tls?: Required<ServerTlsFiles> & { crl?: string };
  /** Serve plaintext beyond loopback (otherwise refused). @default false */
  insecure?: boolean;
  /** Sessions held in all and per device. @default DEFAULT_SESSION_LIMITS */
  sessionLimits?: SessionLimits;
  /** Registry to add the worker's metrics to (WorkerMetrics). @default no metrics */
  metrics?: Registry;
  /** Join a control plane: heartbeat and follow the placement map. */
  cluster?: {
    natsUrl: string;
    natsCredentials?: NatsCredentials;
    name: string;
    heartbeatMs?: number;
    weight?: number;
    /** MoE: expert replicas the worker's memory holds. @default every expert of its layers */
    expertSlots?: number;
    /** host:port edges reach this worker at (behind NAT, in a pod). @default the listening address */
    advertise?: string;
    /** Longest wait, on close, for the leader to move this worker's shards away. @default 10000 */
    drainTimeoutMs?: number;
  };
}

export interface CloudWorker {
  server: RunningServer;
  contexts: ContextManager;
  batcher: DecodeBatcher;
  counters: WorkerCounters;
  membership?: ClusterMembership;
  /** With expertParallel: where this worker's experts ran, and the calls it answered for others. */
  experts?: { parallelism: ExpertParallelism; served: ExpertsServiceCounters; server: RunningServer };
  /** Planned stop: drain shards away first (when in a cluster), then stop serving. */
  close(graceMs?: number): Promise<void>;
}

export async function startCloudWorker(options: CloudWorkerOptions, log: Logger): Promise<CloudWorker> {
  const host = options.host ?? "127.0.0.1";
  checkPlaintextListen(
    host,
    options.tls !== undefined,
    options.insecure ?? false,
    "tlsCert, tlsKey and tlsCa",
  );
  if (!options.tls && options.insecure)
    log.warn({ host }, "serving plaintext: hidden states cross the network unencrypted");
  if (options.cluster?.advertise !== undefined) checkAdvertise(options.cluster.advertise);
  // Before the model loads: a missing or foreign revocation list stops the worker here.
  const revocations = options.tls?.crl
    ? await (await import("@tandem/proto/certificates")).RevocationList.open(options.tls.crl, options.tls.ca)
    : undefined;
  const checkpoint = await loadCheckpoint(options.modelDir);
  const layers = checkpoint.config.numLayers;
  if (!Number.isInteger(options.split) || options.split < 1 || options.split >= layers) {
    throw new InvalidArgumentError(
      "split",
      `must be in [1, ${layers - 1}] for a ${layers}-layer model, got ${options.split}`,
    );
  }
  const spec = cloudSegmentSpec(options.split, layers, options.weightFormat ?? "fp32", options);
  const modelOptions = {
    threads: options.threads ?? 1,
    cacheDir: options.cacheDir,
    onProgress: (progress: Progress) => log.info(progress, "building the segment graph"),
  };
  let model: SegmentRunner;
  let expertParallelism: ExpertParallelism | undefined;
  if (options.expertParallel) {
    const { numExperts } = checkpoint.config;
    if (!numExperts)
      throw new InvalidArgumentError("expertParallel", "applies to MoE models; this one is dense");
    // Over TLS a worker calls the others' Experts with its own certificate.
    if (options.tls) checkWorkerCertificate(options.tls.cert);
    warnUnlessFreedMemoryReturned(log, "the chart sets it with expertParallel");
    expertParallelism = new ExpertParallelism(
      {
        workerId: options.workerId,
        weightsHash: checkpoint.weightsHash,
        hiddenSize: checkpoint.config.hiddenSize,
        split: options.split,
        numLayers: layers,
        numExperts,
      },
      {
        ...options.expertParallel,
        tls: options.tls && { ca: options.tls.ca, cert: options.tls.cert, key: options.tls.key },
      },
      log,
    );
    model = await HostRoutedMoeModel.load(
      checkpoint,
      { ...spec, moeExecution: "host" },
      { ...modelOptions, expertRunner: expertParallelism.runnerFor },
    );
  } else {
    model = await SegmentModel.load(checkpoint, spec, modelOptions);
  }
  // The graph is built (or was cached): a weight decoded for it is needed no more.
  checkpoint.releaseWeights?.();
  const batching = options.batching ?? true;
  const maxBatch = options.maxBatch ?? DEFAULT_DECODE_BATCHER_OPTIONS.maxBatch;
  // KV pools of a batch's rows, so sessions join and leave the running batch copying nothing.
  const sessions = new SegmentSessions(model, { batchRows: batching ? maxBatch : 1 });
  const counters = emptyWorkerCounters();
  // Loaded only by a worker that serves metrics: prom-client stays out of the others.
  const metrics: WorkerMetrics | undefined =
    options.metrics &&
    new (await import("./worker-metrics.ts")).WorkerMetrics(options.metrics, {
      stats: () => contexts.stats(),
      counters,
    });
  const batcher = new DecodeBatcher(sessions, {
    enabled: batching,
    maxBatch,
    stepTokenBudget: options.stepTokenBudget,
    metrics,
  });
  const contexts = new ContextManager(sessions, batcher, {
    memoryBudgetBytes: options.memoryBudgetBytes,
    metrics,
  });
  const protos = loadTandemProtos();
  // One value for what the handlers accept and what the server lets through, so they agree.
  const limits = DEFAULT_ESCALATION_LIMITS;
  // The membership starts once the server listens (its record names the address): until
  // then, and for a standalone worker, every session is served here.
  const joined: { membership?: ClusterMembership } = {};
  const handlers = escalationHandlers(
    {
      workerId: options.workerId,
      ...splitIdentityOf(checkpoint, options.split),
    },
    contexts,
    log,
    counters,
    {
      limits,
      revocations,
      sessionLimits: options.sessionLimits ?? DEFAULT_SESSION_LIMITS,
      placement: { elsewhere: (sessionId) => joined.membership?.elsewhere(sessionId) },
    },
  );
  const server = await startGrpcServer(
    [
      {
        name: "tandem.v1.CloudWorker",
        // The handlers decode each message themselves, to refuse malformed bytes as the edge's fault.
        definition: withUndecodedRequests(protos.tandem.v1.CloudWorker.service),
        handlers,
      },
    ],
    {
      host,
      port: options.port,
      tls: options.tls,
      log,
      maxReceiveMessageBytes: maxMessageBytes(limits, checkpoint.config.hiddenSize),
    },
  );
  const expertCounters: ExpertsServiceCounters = { calls: 0, rows: 0, refused: 0 };
  const expertServer =
    expertParallelism &&
    (await startGrpcServer(
      [
        {
          name: "tandem.v1.Experts",
          definition: withUndecodedRequests(protos.tandem.v1.Experts.service),
          handlers: expertsHandlers(expertParallelism.host(), expertCounters, log, {
            tls: options.tls !== undefined,
            revocations,
          }),
        },
      ],
      {
        host,
        port: options.expertParallel?.port ?? 0,
        tls: options.tls,
        log,
        maxReceiveMessageBytes: maxExpertRequestBytes(checkpoint.config.hiddenSize),
      },
    ));
  log.info(
    {
      address: server.address,
      split: options.split,
      layers,
      weightsHash: checkpoint.weightsHash.slice(0, 16),
    },
    "cloud worker serving",
  );
  if (expertServer) log.info({ address: expertServer.address }, "experts served to other workers");
  // Other workers reach the Experts service at the advertised host, on its own port.
  const advertised = options.cluster?.advertise ?? server.address;
  const expertEndpoint = expertServer && hostPort(listenAddressParts(advertised).host, expertServer.port);
  const membership = options.cluster
    ? await (
        await import("./cluster-membership.ts")
      ).ClusterMembership.start(
        {
          natsUrl: options.cluster.natsUrl,
          natsCredentials: options.cluster.natsCredentials,
          cluster: options.cluster.name,
          nodeId: options.workerId,
          endpoint: advertised,
          expertEndpoint,
          weight: options.cluster.weight,
          heartbeatMs: options.cluster.heartbeatMs,
          drainTimeoutMs: options.cluster.drainTimeoutMs,
          expertSlots:
            options.cluster.expertSlots ?? (checkpoint.config.numExperts ?? 0) * (layers - options.split),
          takeExpertCounts: () => model.takeExpertCounts(),
          heldExperts: expertParallelism && (() => expertParallelism.heldExperts()),
          onExpertMap: expertParallelism && ((map, held) => expertParallelism.onExpertMap(map, held)),
        },
        contexts,
        log,
      )
    : undefined;
  joined.membership = membership;
  return {
    server,
    contexts,
    batcher,
    counters,
    membership,
    experts: expertParallelism &&
      expertServer && { parallelism: expertParallelism, served: expertCounters, server: expertServer },
    async close(graceMs) {
      if (membership) {
        // Out of load balancers' rotation at once; edges keep reaching it until their shards move.
        server.setServing(false);
        const drained = await membership.drain();
        log.info({ drained }, drained ? "shards moved away" : "drain timed out");
        await membership.stop();
      }
      await server.shutdown(graceMs);
      await expertServer?.shutdown(graceMs);
      log.info("stopped serving");
      expertParallelism?.close();
      await model.release();
    },
  };
}

/**
 * A worker's certificate must authenticate it as a client too, to call the other workers'
 * Experts: `tandem certs issue-server` issues such certificates; older ones are refused here.
 */
function checkWorkerCertificate(certFile: string): void {
  if (!isWorkerCertificate(readFileSync(certFile)))
    throw new InvalidArgumentError(
      "tlsCert",
      "is not for client authentication, which expertParallel needs to call other workers: issue it again with `tandem certs issue-server`",
    );
}

/**
 * The address the worker's record gives edges, who are redirected there: checked where
 * the value is known (a pod's expanded `$(POD_IP)`), rather than by every edge sent to it.
 * (The listening address, the default, is host:port by construction.)
 */
function checkAdvertise(advertise: string): void {
  if (!HOST_PORT_PATTERN.test(advertise))
    throw new InvalidArgumentError(
      "advertise",
      `edges are sent to this worker at host:port (an IPv6 host in brackets), got ${JSON.stringify(advertise)}`,
    );
}
