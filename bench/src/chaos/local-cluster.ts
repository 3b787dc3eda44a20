/**
 * A Tandem cluster on this machine for the chaos benchmark, every part a real process:
 * NATS (one nats-server, or three routed into a NATS cluster), two control-plane
 * replicas, two cloud workers and an edge agent that follows the placement map, on the
 * demo model. Only what a deployment must say is passed — model, split, ports, NATS,
 * cluster name, the fp32 codec, names — so every timing (heartbeats, their TTL, ticks,
 * the lease, the edge's cloud deadline) is the shipped default.
 */
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  connectNats,
  controlPlaneNames,
  openLease,
  openShardMap,
  type ShardMapRecord,
  VersionedMapView,
} from "@tandem/cluster";
import {
  type ProgramName,
  type RunningProcess,
  startNatsCluster,
  startNatsServer,
  startProgram,
  type TestNatsCluster,
  type TestNatsServer,
  until,
} from "@tandem/testkit";
import { DEMO_MODEL } from "../bench-paths.ts";
import { observedMap, type PlacementObservation } from "./placement-observation.ts";
import type { GenerationMode } from "./generation-record.ts";

/** Layers the edge runs: the demo model's recommended split (its tandem.json). */
export const SPLIT = 3;
const WORKER_IDS = ["w1", "w2"];
const CALIBRATION = `${DEMO_MODEL}/calibration.safetensors`;

export interface ClusterSpec {
  /** 1: a single nats-server; 3: a NATS cluster of three (programs get every server's URL). */
  natsServers: 1 | 3;
  /** AUTO-mode runs give the edge the demo's calibration (thresholds for 99% agreement). */
  mode: GenerationMode;
  /** A name of this cluster's own: NATS buckets and subjects are namespaced by it. */
  name: string;
  /** Write each program's log (level info) to NAME-PROGRAM.log here once it stops. @default logs kept to warnings, in memory */
  logDir?: string;
}

export class LocalCluster {
  readonly workers = new Map<string, RunningProcess>();
  readonly replicas = new Map<string, RunningProcess>();
  private edgeProcess?: RunningProcess;
  private replicasStarted = 0;
  /** The name each running process's log is written under. */
  private readonly logNames = new Map<RunningProcess, string>();

  private constructor(
    readonly spec: ClusterSpec,
    private readonly nats: { single?: TestNatsServer; cluster?: TestNatsCluster },
    readonly natsUrl: string,
  ) {}

  static async start(spec: ClusterSpec): Promise<LocalCluster> {
    const nats =
      spec.natsServers === 1 ? { single: await startNatsServer() } : { cluster: await startNatsCluster(3) };
    const cluster = new LocalCluster(spec, nats, nats.single?.url ?? nats.cluster!.url);
    try {
      await cluster.startReplica();
      await cluster.startReplica();
      for (const id of WORKER_IDS) await cluster.startWorker(id);
      const edgeFlags: Record<string, string | number> = {
        model: DEMO_MODEL,
        split: SPLIT,
        natsUrl: cluster.natsUrl,
        cluster: spec.name,
        codec: "fp32",
        port: 0,
      };
      if (spec.mode === "MODE_AUTO") edgeFlags.calibration = CALIBRATION;
      cluster.edgeProcess = await cluster.start("tandem-edge", edgeFlags, "edge");
      await cluster.settled();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  private async start(
    program: ProgramName,
    flags: Record<string, string | number>,
    logName: string,
  ): Promise<RunningProcess> {
    const running = await startProgram(program, flags, {
      TANDEM_LOG_LEVEL: this.spec.logDir ? "info" : "warn",
    });
    this.logNames.set(running, logName);
    return running;
  }

  /** SIGKILL, and the process's log kept when asked. */
  private async killNow(running: RunningProcess): Promise<void> {
    await running.kill("SIGKILL");
    const logName = this.logNames.get(running);
    this.logNames.delete(running);
    if (this.spec.logDir && logName) {
      mkdirSync(this.spec.logDir, { recursive: true });
      appendFileSync(join(this.spec.logDir, `${this.spec.name}-${logName}.log`), running.output());
    }
  }

  get edge(): RunningProcess {
    if (!this.edgeProcess) throw new Error("the edge is not running");
    return this.edgeProcess;
  }

  get natsServerCount(): number {
    return this.nats.cluster?.servers.length ?? 1;
  }

  /** Starts a control-plane replica under a new name, as a Deployment's replacement pod is. */
  async startReplica(): Promise<string> {
    const replicaId = `cp${++this.replicasStarted}`;
    this.replicas.set(
      replicaId,
      await this.start(
        "tandem-control-plane",
        { natsUrl: this.natsUrl, cluster: this.spec.name, replicaId },
        replicaId,
      ),
    );
    return replicaId;
  }

  /** Starts a worker (a StatefulSet's replacement keeps the name; the port is a new one). */
  async startWorker(id: string): Promise<void> {
    this.workers.set(
      id,
      await this.start(
        "tandem-cloud-worker",
        {
          model: DEMO_MODEL,
          split: SPLIT,
          port: 0,
          workerId: id,
          natsUrl: this.natsUrl,
          cluster: this.spec.name,
        },
        id,
      ),
    );
  }

  /** SIGKILL: the worker's process dies at once, with its sessions' KV. */
  async killWorker(id: string): Promise<void> {
    const worker = this.workers.get(id);
    if (!worker) throw new Error(`no worker ${id}`);
    this.workers.delete(id);
    await this.killNow(worker);
  }

  async killReplica(id: string): Promise<void> {
    const replica = this.replicas.get(id);
    if (!replica) throw new Error(`no control-plane replica ${id}`);
    this.replicas.delete(id);
    await this.killNow(replica);
  }

  /**
   * Follows the shard map (on a connection of its own) until the returned stop, which
   * gives every map seen meanwhile: how often placement changed, and whether a map left
   * out a worker that was running.
   */
  async observePlacement(): Promise<() => Promise<PlacementObservation>> {
    const nc: NatsConnection = await connectNats(this.natsUrl, { name: "chaos bench observer" });
    try {
      const view = await VersionedMapView.follow(await openShardMap(nc, controlPlaneNames(this.spec.name)));
      // The watch delivers the current map just after it starts: that one is where the observation begins.
      const current = await view.waitFor((map) => map, 10_000);
      const observation: PlacementObservation = { initial: current && observedMap(current), maps: [] };
      view.onChange((map) => observation.maps.push(observedMap(map)));
      return async () => {
        view.stop();
        await nc.close().catch(() => undefined);
        return observation;
      };
    } catch (error) {
      await nc.close().catch(() => undefined);
      throw error;
    }
  }

  /** Process ids of the running workers, by worker id. */
  workerPids(): Map<string, number> {
    return new Map([...this.workers].map(([id, worker]) => [id, worker.child.pid!]));
  }

  /** The replica holding an unexpired lease, as the lease bucket says. */
  async leader(): Promise<string | undefined> {
    const nc = await connectNats(this.natsUrl, { reconnect: false, name: "chaos bench" });
    try {
      const lease = (await (await openLease(nc, controlPlaneNames(this.spec.name))).read())?.record;
      return lease && lease.expiresAt > Date.now() ? lease.holder : undefined;
    } finally {
      await nc.close();
    }
  }

  private async shardMap(): Promise<ShardMapRecord | undefined> {
    const nc = await connectNats(this.natsUrl, { reconnect: false, name: "chaos bench" });
    try {
      return (await (await openShardMap(nc, controlPlaneNames(this.spec.name))).read())?.record;
    } finally {
      await nc.close();
    }
  }

  /**
   * Resolves once a running replica leads and the placement map gives shards to exactly
   * the running workers, each at the address it listens on now.
   */
  async settled(timeoutMs = 60_000): Promise<void> {
    await until(
      "the cluster to settle (a leader, and a map of the running workers)",
      async () => {
        const leader = await this.leader().catch(() => undefined);
        if (!leader || !this.replicas.has(leader)) return undefined;
        const map = await this.shardMap().catch(() => undefined);
        if (!map) return undefined;
        const owners = new Set(Object.values(map.shards));
        const running = [...this.workers];
        return (
          owners.size === running.length &&
          running.every(([id, worker]) => owners.has(id) && map.endpoints[id] === worker.address)
        );
      },
      timeoutMs,
      200,
    );
  }

  /** Stops the single nats-server and starts it again on the same port and store. */
  async restartNats(): Promise<void> {
    if (!this.nats.single) throw new Error("this cluster runs a NATS cluster, not one server");
    await this.nats.single.restart();
  }

  /** SIGKILLs one server of the NATS cluster. */
  async killNatsServer(index: number): Promise<void> {
    const server = this.nats.cluster?.servers[index];
    if (!server) throw new Error(`no NATS server ${index}`);
    await server.stop();
  }

  /** Stops everything, each part even if another fails to stop. */
  async stop(): Promise<void> {
    const processes = [
      ...(this.edgeProcess ? [this.edgeProcess] : []),
      ...this.workers.values(),
      ...this.replicas.values(),
    ];
    this.edgeProcess = undefined;
    this.workers.clear();
    this.replicas.clear();
    await Promise.allSettled(processes.map((running) => this.killNow(running)));
    await Promise.allSettled([this.nats.single?.stop(), this.nats.cluster?.stop()]);
  }
}
