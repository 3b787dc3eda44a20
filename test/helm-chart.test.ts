/**
 * The Helm chart in charts/tandem, checked with a real helm (no cluster here): it lints,
 * renders manifests that validate against the Kubernetes 1.27 schemas, passes values
 * through, refuses bad values by name, and configures each program only with keys the
 * program reads, in values it accepts.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as models from "kubernetes-models";
import { parseAllDocuments } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { environmentName, loadConfig, programSchema, type ConfigSchema } from "@tandem/common";
import { BATCH_CONFIG_SCHEMA, BATCH_PROGRAM } from "@tandem/batch-worker";
import { WORKER_CONFIG_SCHEMA, WORKER_PROGRAM } from "@tandem/cloud-worker";
import { CONTROL_CONFIG_SCHEMA, CONTROL_PROGRAM } from "@tandem/control-plane";
import { FREED_MEMORY_ENV, INT4_HEAD_BITS, QUANT_BLOCK_SIZES, WEIGHT_FORMATS } from "@tandem/runtime";

const ROOT = join(import.meta.dirname, "..");
const CHART = join(ROOT, "charts", "tandem");
let helm: string;

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
}
interface Probe {
  grpc?: { port: number; service?: string };
  tcpSocket?: { port: number };
}
interface Container {
  name: string;
  command: string[];
  env: { name: string; value?: string; valueFrom?: unknown }[];
  ports?: { name: string; containerPort: number; protocol: string }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
}

/** Every program's NATS credential and NATS's TLS from Secrets: a worker's per pod, an NKey seed. */
const NATS_SECURED = [
  "nats.credentials.cloudWorker.secretName=nats-workers",
  "nats.credentials.cloudWorker.key=$(POD_NAME).nk",
  "nats.credentials.cloudWorker.type=nkey",
  "nats.credentials.controlPlane.secretName=nats-control",
  "nats.tls.caSecret=nats-ca",
  "nats.tls.clientCertSecret=nats-client",
];

beforeAll(() => {
  helm = execFileSync(join(ROOT, "tools", "helm", "ensure-helm.sh"), { encoding: "utf8" }).trim();
}, 120_000);

function render(...sets: string[]): Manifest[] {
  const out = execFileSync(helm, ["template", "tandem", CHART, ...sets.flatMap((s) => ["--set", s])], {
    encoding: "utf8",
  });
  return parseAllDocuments(out)
    .map((d) => d.toJSON() as Manifest | null)
    .filter((m): m is Manifest => m !== null);
}

type ModelClass = new (data: unknown) => { validate(): void };

/** The kubernetes-models class for a manifest's apiVersion and kind. */
function modelOf(m: Manifest): ModelClass {
  const [group, version] = m.apiVersion.includes("/") ? m.apiVersion.split("/") : ["", m.apiVersion];
  const tree = models as unknown as Record<string, Record<string, Record<string, unknown> | undefined>>;
  // kubernetes-models names groups in camel case: networking.k8s.io → networkingK8sIo.
  const groupKey = group.replace(/\.([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  const entry = group === "" ? tree[version]?.[m.kind] : tree[groupKey]?.[version]?.[m.kind];
  if (typeof entry !== "function") throw new Error(`no schema for ${m.apiVersion} ${m.kind}`);
  return entry as ModelClass;
}

const podOf = (manifests: Manifest[], kind: string, component: string) => {
  const m = manifests.find((x) => x.kind === kind && x.metadata.name.endsWith(component));
  if (!m) throw new Error(`no ${kind} ${component}`);
  return m.spec.template.spec as { containers: Container[]; volumes: Record<string, unknown>[] };
};
const containerOf = (manifests: Manifest[], kind: string, component: string): Container =>
  podOf(manifests, kind, component).containers[0];

/** The environment a container gets, with the downward-API fields the kubelet would fill in. */
function environmentOf(container: Container): NodeJS.ProcessEnv {
  const pod = { POD_NAME: "tandem-cloud-worker-0", POD_IP: "10.1.2.3" };
  return Object.fromEntries(
    container.env
      .filter((e) => e.value !== undefined)
      .map((e) => [e.name, e.value!.replace(/\$\((POD_NAME|POD_IP)\)/g, (_, k: keyof typeof pod) => pod[k])]),
  );
}

/** A worker's configuration from a model, a split and `env`, as a chart's variables would set it. */
const loadWorkerConfig = (env: NodeJS.ProcessEnv) =>
  loadConfig(WORKER_CONFIG_SCHEMA, {
    envPrefix: "TANDEM_WORKER",
    env: { TANDEM_WORKER_MODEL: "/models/m", TANDEM_WORKER_SPLIT: "3", ...env },
  });

describe("the Helm chart", () => {
  it("lints clean with helm --strict", () => {
    const lint = spawnSync(helm, ["lint", CHART, "--strict"], { encoding: "utf8" });
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
    expect(lint.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it("renders workers, control plane and batch worker that validate against the Kubernetes schemas", () => {
    const manifests = render();
    expect(manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort()).toEqual([
      "Deployment/tandem-batch-worker",
      "Deployment/tandem-control-plane",
      "NetworkPolicy/tandem-cloud-worker",
      "NetworkPolicy/tandem-no-ingress",
      "PodDisruptionBudget/tandem-cloud-worker",
      "PodDisruptionBudget/tandem-control-plane",
      "Service/tandem-cloud-worker",
      "Service/tandem-cloud-worker-pods",
      "StatefulSet/tandem-cloud-worker",
    ]);
    for (const m of manifests) {
      const Model = modelOf(m);
      expect(() => new Model(m).validate(), `${m.kind} ${m.metadata.name}`).not.toThrow();
    }
    // A deliberately broken manifest does fail validation: the check is real.
    const broken = structuredClone(manifests.find((m) => m.kind === "StatefulSet")!);
    broken.spec.replicas = "two";
    expect(() => new (modelOf(broken))(broken).validate()).toThrow(/replicas/);
    const worker = manifests.find((m) => m.kind === "StatefulSet")!;
    expect(worker.spec.replicas).toBe(2);
    // TLS by default: the certificate from a Secret, probes on the TLS port's socket, and
    // workers reached by their pods' DNS names, which one wildcard certificate can name.
    expect(worker.spec.template.spec.containers[0].readinessProbe.tcpSocket.port).toBe(50052);
    expect(worker.spec.template.spec.containers[0].env).toContainEqual({
      name: "TANDEM_WORKER_ADVERTISE",
      value: "$(POD_NAME).tandem-cloud-worker-pods.default.svc:50052",
    });
    expect(worker.spec.template.spec.volumes).toContainEqual({
      name: "tls",
      secret: { secretName: "tandem-worker-tls", defaultMode: 0o400 },
    });
    for (const m of manifests.filter((x) => x.spec?.template))
      expect(m.spec.template.spec.automountServiceAccountToken, m.metadata.name).toBe(false);
    expect(worker.spec.template.spec.terminationGracePeriodSeconds).toBe(40);
    expect(
      manifests.find((m) => m.metadata.name === "tandem-control-plane" && m.kind === "Deployment")!.spec
        .replicas,
    ).toBe(3);
  });

  it("configures each program only with keys it reads, in values it accepts", () => {
    const manifests = render("cloudWorker.expertSlots=12", "controlPlane.experts=24", ...NATS_SECURED);
    const programs: [string, string, string, ConfigSchema][] = [
      ["StatefulSet", "cloud-worker", "TANDEM_WORKER", programSchema(WORKER_PROGRAM)],
      ["Deployment", "control-plane", "TANDEM_CONTROL", programSchema(CONTROL_PROGRAM)],
      ["Deployment", "batch-worker", "TANDEM_BATCH", programSchema(BATCH_PROGRAM)],
    ];
    for (const [kind, component, prefix, schema] of programs) {
      const container = containerOf(manifests, kind, component);
      // The command is a program the repository ships.
      expect(existsSync(join(ROOT, container.command[1].replace(/^\/app\//, "")))).toBe(true);
      const known = new Set(Object.keys(schema.shape).map((key) => environmentName(prefix, key)));
      const set = container.env.map((e) => e.name).filter((n) => n.startsWith(`${prefix}_`));
      expect(
        set.filter((name) => !known.has(name)),
        component,
      ).toEqual([]);
      // The program's own loader accepts the rendered environment (types, ranges, choices).
      expect(
        () => loadConfig(schema, { envPrefix: prefix, env: environmentOf(container) }),
        component,
      ).not.toThrow();
    }
    const worker = loadConfig(WORKER_CONFIG_SCHEMA, {
      envPrefix: "TANDEM_WORKER",
      env: environmentOf(containerOf(manifests, "StatefulSet", "cloud-worker")),
    });
    expect(worker).toMatchObject({
      split: 3,
      host: "0.0.0.0",
      workerId: "tandem-cloud-worker-0",
      advertise: "tandem-cloud-worker-0.tandem-cloud-worker-pods.default.svc:50052",
      natsUrl: "nats://nats:4222",
      expertSlots: 12,
      natsNkeySeed: "/etc/tandem/nats/credentials/tandem-cloud-worker-0.nk",
      natsTlsCa: "/etc/tandem/nats/ca/ca.crt",
      natsTlsCert: "/etc/tandem/nats/client/tls.crt",
      natsTlsKey: "/etc/tandem/nats/client/tls.key",
    });
    const control = loadConfig(CONTROL_CONFIG_SCHEMA, {
      envPrefix: "TANDEM_CONTROL",
      env: environmentOf(containerOf(manifests, "Deployment", "control-plane")),
    });
    expect(control).toMatchObject({
      natsCreds: "/etc/tandem/nats/credentials/nats.creds",
      natsTlsCa: "/etc/tandem/nats/ca/ca.crt",
      healthHost: "0.0.0.0",
      healthPort: 50053,
    });
    const batch = loadConfig(BATCH_CONFIG_SCHEMA, {
      envPrefix: "TANDEM_BATCH",
      env: environmentOf(containerOf(manifests, "Deployment", "batch-worker")),
    });
    expect(batch).toMatchObject({ healthHost: "0.0.0.0", healthPort: 50054 });
  });

  it("probes the control plane and the batch worker with the kubelet's gRPC probe on their health ports", () => {
    for (const manifests of [render(), render(...NATS_SECURED)]) {
      const probed: [string, string, number][] = [
        ["control-plane", "TANDEM_CONTROL", 50053],
        ["batch-worker", "TANDEM_BATCH", 50054],
      ];
      for (const [component, prefix, port] of probed) {
        const container = containerOf(manifests, "Deployment", component);
        for (const probe of [container.startupProbe, container.readinessProbe])
          expect(probe, component).toEqual(expect.objectContaining({ grpc: { port } }));
        // Liveness asks the service that stays SERVING while NATS or Redis is away.
        expect(container.livenessProbe, component).toEqual(
          expect.objectContaining({ grpc: { port, service: "liveness" } }),
        );
        expect(container.ports).toEqual([
          { name: "health", containerPort: port, protocol: "TCP" },
          { name: "metrics", containerPort: 9464, protocol: "TCP" },
        ]);
        // On the pod's address, where the kubelet asks.
        expect(environmentOf(container)).toMatchObject({
          [`${prefix}_HEALTH_HOST`]: "0.0.0.0",
          [`${prefix}_HEALTH_PORT`]: String(port),
        });
      }
      for (const m of manifests) expect(() => new (modelOf(m))(m).validate()).not.toThrow();
    }
    const moved = render("controlPlane.healthPort=8081", "batchWorker.healthPort=8082");
    expect(containerOf(moved, "Deployment", "control-plane").livenessProbe).toEqual(
      expect.objectContaining({ grpc: { port: 8081, service: "liveness" } }),
    );
    expect(containerOf(moved, "Deployment", "batch-worker").readinessProbe).toEqual(
      expect.objectContaining({ grpc: { port: 8082 } }),
    );
    // Still nothing may connect to them but the kubelet, from their own node (and Prometheus).
    const closed = moved.find((m) => m.metadata.name === "tandem-no-ingress")!;
    expect(closed.spec.ingress).toEqual([{ ports: [{ port: 9464, protocol: "TCP" }] }]);
  });

  it("gives each program that joins NATS its credential from a Secret, mounted as a file, never as a value", () => {
    const plain = render();
    for (const [kind, component] of [
      ["StatefulSet", "cloud-worker"],
      ["Deployment", "control-plane"],
      ["Deployment", "batch-worker"],
    ]) {
      const pod = podOf(plain, kind, component);
      expect(pod.containers[0].env.filter((e) => /_NATS_(CREDS|NKEY_SEED|TLS_)/.test(e.name))).toEqual([]);
      expect(pod.volumes.filter((v) => String(v.name).startsWith("nats-"))).toEqual([]);
    }
    const manifests = render(...NATS_SECURED.slice(0, 4));
    const worker = podOf(manifests, "StatefulSet", "cloud-worker");
    // One Secret, one NKey seed per worker pod: each may write only its own node record.
    expect(environmentOf(worker.containers[0]).TANDEM_WORKER_NATS_NKEY_SEED).toBe(
      "/etc/tandem/nats/credentials/tandem-cloud-worker-0.nk",
    );
    expect(worker.containers[0].volumeMounts).toContainEqual({
      name: "nats-credentials",
      mountPath: "/etc/tandem/nats/credentials",
      readOnly: true,
    });
    expect(worker.volumes).toContainEqual({
      name: "nats-credentials",
      secret: { secretName: "nats-workers", defaultMode: 0o400 },
    });
    const control = podOf(manifests, "Deployment", "control-plane");
    expect(control.containers[0].env).toContainEqual({
      name: "TANDEM_CONTROL_NATS_CREDS",
      value: "/etc/tandem/nats/credentials/nats.creds",
    });
    expect(control.volumes).toContainEqual({
      name: "nats-credentials",
      secret: { secretName: "nats-control", defaultMode: 0o400 },
    });
    // The batch worker does not use NATS.
    expect(
      containerOf(manifests, "Deployment", "batch-worker").env.some((e) => e.name.includes("NATS")),
    ).toBe(false);
    for (const m of manifests) expect(() => new (modelOf(m))(m).validate()).not.toThrow();
  });

  it("connects every program to NATS over TLS, with the CA and client certificate from Secrets", () => {
    const paths = {
      CA: "/etc/tandem/nats/ca/ca.crt",
      CERT: "/etc/tandem/nats/client/tls.crt",
      KEY: "/etc/tandem/nats/client/tls.key",
    };
    const caOnly = render("nats.tls.caSecret=nats-ca");
    const verified = render("nats.tls.caSecret=nats-ca", "nats.tls.clientCertSecret=nats-client");
    for (const [kind, component, prefix] of [
      ["StatefulSet", "cloud-worker", "TANDEM_WORKER"],
      ["Deployment", "control-plane", "TANDEM_CONTROL"],
    ]) {
      const withCa = podOf(caOnly, kind, component);
      expect(withCa.containers[0].env).toContainEqual({ name: `${prefix}_NATS_TLS_CA`, value: paths.CA });
      expect(withCa.containers[0].env.some((e) => e.name === `${prefix}_NATS_TLS_CERT`)).toBe(false);
      expect(withCa.volumes).toContainEqual({
        name: "nats-ca",
        secret: { secretName: "nats-ca", items: [{ key: "ca.crt", path: "ca.crt" }] },
      });
      const pod = podOf(verified, kind, component);
      for (const [setting, path] of Object.entries(paths))
        expect(pod.containers[0].env).toContainEqual({ name: `${prefix}_NATS_TLS_${setting}`, value: path });
      expect(pod.containers[0].volumeMounts).toEqual(
        expect.arrayContaining([
          { name: "nats-ca", mountPath: "/etc/tandem/nats/ca", readOnly: true },
          { name: "nats-client-tls", mountPath: "/etc/tandem/nats/client", readOnly: true },
        ]),
      );
      expect(pod.volumes).toContainEqual({
        name: "nats-client-tls",
        secret: {
          secretName: "nats-client",
          defaultMode: 0o400,
          items: [
            { key: "tls.crt", path: "tls.crt" },
            { key: "tls.key", path: "tls.key" },
          ],
        },
      });
    }
    for (const m of [...caOnly, ...verified]) expect(() => new (modelOf(m))(m).validate()).not.toThrow();
  });

  it("passes values through: split, cluster, a model volume, no batch worker", () => {
    const manifests = render(
      "cloudWorker.split=5",
      "cluster=eu-west",
      "cloudWorker.port=6000",
      "batchWorker.enabled=false",
      "model.volume.persistentVolumeClaim.claimName=models",
      "model.path=/models/tandem-demo",
    );
    expect(manifests.some((m) => m.metadata.name.endsWith("batch-worker"))).toBe(false);
    const worker = containerOf(manifests, "StatefulSet", "cloud-worker");
    const env = environmentOf(worker);
    expect(env).toMatchObject({
      TANDEM_WORKER_SPLIT: "5",
      TANDEM_WORKER_CLUSTER: "eu-west",
      TANDEM_WORKER_PORT: "6000",
      TANDEM_WORKER_ADVERTISE: "tandem-cloud-worker-0.tandem-cloud-worker-pods.default.svc:6000",
      TANDEM_WORKER_MODEL: "/models/tandem-demo",
    });
    expect(worker.volumeMounts).toContainEqual({ name: "models", mountPath: "/models", readOnly: true });
    const pod = manifests.find((m) => m.kind === "StatefulSet")!.spec.template.spec;
    expect(pod.volumes).toContainEqual({ name: "models", persistentVolumeClaim: { claimName: "models" } });
    for (const m of manifests) expect(() => new (modelOf(m))(m).validate()).not.toThrow();
  });

  it("serves workers in plaintext only when told insecure, with gRPC health probes then", () => {
    const manifests = render("cloudWorker.tls.secretName=", "cloudWorker.insecure=true");
    const worker = manifests.find((m) => m.kind === "StatefulSet")!;
    const container = worker.spec.template.spec.containers[0];
    expect(container.env).toContainEqual({ name: "TANDEM_WORKER_INSECURE", value: "true" });
    expect(container.env.some((e: { name: string }) => e.name.startsWith("TANDEM_WORKER_TLS"))).toBe(false);
    expect(container.readinessProbe.grpc.port).toBe(50052);
    expect(container.env).toContainEqual({ name: "TANDEM_WORKER_ADVERTISE", value: "$(POD_IP):50052" });
    for (const m of manifests) expect(() => new (modelOf(m))(m).validate()).not.toThrow();
  });

  it("gives the batch worker Redis over TLS and its password from a Secret, never from a value", () => {
    const manifests = render("redis.url=rediss://tandem@redis:6380", "redis.passwordSecret=redis-auth");
    const batch = manifests.find((m) => m.kind === "Deployment" && m.metadata.name.endsWith("batch-worker"))!;
    const container = batch.spec.template.spec.containers[0];
    expect(container.env).toContainEqual({
      name: "TANDEM_BATCH_REDIS_URL",
      value: "rediss://tandem@redis:6380",
    });
    expect(container.env).toContainEqual({
      name: "TANDEM_BATCH_REDIS_PASSWORD_FILE",
      value: "/etc/tandem/redis/password",
    });
    expect(batch.spec.template.spec.volumes).toContainEqual(
      expect.objectContaining({
        name: "redis-password",
        secret: expect.objectContaining({ secretName: "redis-auth" }),
      }),
    );
    for (const m of manifests) expect(() => new (modelOf(m))(m).validate()).not.toThrow();
  });

  it("lets workers take connections on their port only, from the peers named, and nothing reach the control plane or batch worker", () => {
    const peers = "networkPolicy.workerIngressFrom[0].namespaceSelector.matchLabels.team=edge-gateway";
    const policies = render(peers, "metrics.enabled=false").filter((m) => m.kind === "NetworkPolicy");
    const workers = policies.find((m) => m.metadata.name === "tandem-cloud-worker")!;
    expect(workers.spec.ingress).toEqual([
      {
        ports: [{ port: 50052, protocol: "TCP" }],
        from: [{ namespaceSelector: { matchLabels: { team: "edge-gateway" } } }],
      },
    ]);
    const closed = policies.find((m) => m.metadata.name === "tandem-no-ingress")!;
    expect(closed.spec.ingress).toBeUndefined();
    expect(closed.spec.policyTypes).toEqual(["Ingress"]);
    expect(render("networkPolicy.enabled=false").some((m) => m.kind === "NetworkPolicy")).toBe(false);
  });

  it("serves every program's metrics on the pods' metrics port, annotated for Prometheus, reachable through the policies", () => {
    const scraper = "metrics.scrapeFrom[0].namespaceSelector.matchLabels.team=monitoring";
    const manifests = render(scraper);
    const programs: [string, string, string][] = [
      ["StatefulSet", "cloud-worker", "TANDEM_WORKER"],
      ["Deployment", "control-plane", "TANDEM_CONTROL"],
      ["Deployment", "batch-worker", "TANDEM_BATCH"],
    ];
    for (const [kind, component, prefix] of programs) {
      const workload = manifests.find((m) => m.kind === kind && m.metadata.name.endsWith(component))!;
      expect(workload.spec.template.metadata.annotations, component).toEqual({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9464",
        "prometheus.io/path": "/metrics",
      });
      const container = containerOf(manifests, kind, component);
      expect(container.ports, component).toContainEqual({
        name: "metrics",
        containerPort: 9464,
        protocol: "TCP",
      });
      // The program listens there, on the pod's address: its own loader reads the setting.
      expect(environmentOf(container)[`${prefix}_METRICS_ADDRESS`], component).toBe("0.0.0.0:9464");
    }
    const control = loadConfig(programSchema(CONTROL_PROGRAM), {
      envPrefix: "TANDEM_CONTROL",
      env: environmentOf(containerOf(manifests, "Deployment", "control-plane")),
    });
    expect(control.metricsAddress).toBe("0.0.0.0:9464");
    const metricsRule = {
      ports: [{ port: 9464, protocol: "TCP" }],
      from: [{ namespaceSelector: { matchLabels: { team: "monitoring" } } }],
    };
    const policies = manifests.filter((m) => m.kind === "NetworkPolicy");
    expect(policies.find((m) => m.metadata.name === "tandem-cloud-worker")!.spec.ingress).toContainEqual(
      metricsRule,
    );
    expect(policies.find((m) => m.metadata.name === "tandem-no-ingress")!.spec.ingress).toEqual([
      metricsRule,
    ]);
    for (const m of manifests) expect(() => new (modelOf(m))(m).validate(), m.metadata.name).not.toThrow();
    // No ServiceMonitor unless asked for: it needs the Prometheus Operator's CRD.
    expect(manifests.some((m) => m.kind === "ServiceMonitor")).toBe(false);

    // Metrics off: no port, annotation or setting, and the policies as they were.
    const off = render("metrics.enabled=false", "metrics.serviceMonitor.enabled=true");
    for (const [kind, component, prefix] of programs) {
      const workload = off.find((m) => m.kind === kind && m.metadata.name.endsWith(component))!;
      expect(workload.spec.template.metadata.annotations, component).toBeUndefined();
      const container = containerOf(off, kind, component);
      expect(
        container.ports?.map((p) => p.name),
        component,
      ).not.toContain("metrics");
      expect(environmentOf(container)[`${prefix}_METRICS_ADDRESS`], component).toBeUndefined();
    }
    expect(off.find((m) => m.metadata.name === "tandem-no-ingress")!.spec.ingress).toBeUndefined();
    expect(off.some((m) => m.kind === "ServiceMonitor" || m.metadata.name === "tandem-metrics")).toBe(false);
  });

  it("turns the workers' tracing on when asked, naming the service and where spans go", () => {
    const tracingVariables = (manifests: Manifest[], kind: string, component: string) =>
      Object.keys(environmentOf(containerOf(manifests, kind, component))).filter(
        (name) => name === "TANDEM_TRACING" || name.startsWith("OTEL_"),
      );
    const on = render(
      "tracing.enabled=true",
      "tracing.otlpEndpoint=http://otel-collector.monitoring:4318",
      "tracing.sampleRatio=0.25",
    );
    expect(environmentOf(containerOf(on, "StatefulSet", "cloud-worker"))).toMatchObject({
      TANDEM_TRACING: "1",
      OTEL_SERVICE_NAME: "tandem-cloud-worker",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector.monitoring:4318",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.25",
    });
    // The control plane and the batch worker make no spans: no SDK to start there.
    expect(tracingVariables(on, "Deployment", "control-plane")).toEqual([]);
    expect(tracingVariables(on, "Deployment", "batch-worker")).toEqual([]);
    for (const m of on) expect(() => new (modelOf(m))(m).validate(), m.metadata.name).not.toThrow();
    // Off by default: no tracing variable at all.
    const off = render();
    expect(tracingVariables(off, "StatefulSet", "cloud-worker")).toEqual([]);
    expect(() => render("tracing.protocol=carrier-pigeon")).toThrow(/protocol/);
  });

  it("renders a ServiceMonitor over every pod's metrics port only when asked", () => {
    const manifests = render(
      "metrics.serviceMonitor.enabled=true",
      "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
      "metrics.serviceMonitor.interval=15s",
    );
    const service = manifests.find((m) => m.kind === "Service" && m.metadata.name === "tandem-metrics")!;
    expect(() => new (modelOf(service))(service).validate()).not.toThrow();
    // Headless, over every Tandem pod of the release: control plane and batch worker have no other Service.
    expect(service.spec).toEqual({
      clusterIP: "None",
      selector: { "app.kubernetes.io/name": "tandem", "app.kubernetes.io/instance": "tandem" },
      ports: [{ name: "metrics", port: 9464, targetPort: "metrics", protocol: "TCP" }],
    });
    for (const [kind, component] of [
      ["StatefulSet", "cloud-worker"],
      ["Deployment", "control-plane"],
      ["Deployment", "batch-worker"],
    ]) {
      const workload = manifests.find((m) => m.kind === kind && m.metadata.name.endsWith(component))!;
      const labels = workload.spec.template.metadata.labels as Record<string, string>;
      for (const [key, value] of Object.entries(service.spec.selector as Record<string, string>))
        expect(labels[key], component).toBe(value);
    }
    // The CRD's schema is not among the Kubernetes schemas: its fields are checked here.
    const monitor = manifests.find((m) => m.kind === "ServiceMonitor")!;
    expect(monitor.apiVersion).toBe("monitoring.coreos.com/v1");
    expect(monitor.metadata.labels?.release).toBe("kube-prometheus-stack");
    const serviceLabels = service.metadata.labels ?? {};
    for (const [key, value] of Object.entries(monitor.spec.selector.matchLabels as Record<string, string>))
      expect(serviceLabels[key], key).toBe(value);
    expect(monitor.spec.endpoints).toEqual([{ port: "metrics", path: "/metrics", interval: "15s" }]);
    expect(monitor.spec.podTargetLabels).toEqual(["app.kubernetes.io/component"]);
  });

  it("bounds the control plane's lease by the program's own rule: the least it takes, at the shortest tick", () => {
    const schema = JSON.parse(readFileSync(join(CHART, "values.schema.json"), "utf8")) as {
      properties: { controlPlane: { properties: Record<string, { minimum: number }> } };
    };
    const { leaseTtlMs, tickMs } = schema.properties.controlPlane.properties;
    // JSON Schema cannot compare two values; its minimum lease is the least the program
    // accepts with the least tick the chart allows (the lease must outlast margin + tick).
    const load = (lease: number, tick: number) => () =>
      loadConfig(CONTROL_CONFIG_SCHEMA, {
        envPrefix: "TANDEM_CONTROL",
        env: {},
        overrides: { leaseTtlMs: lease, tickMs: tick },
      });
    expect(load(leaseTtlMs.minimum, tickMs.minimum)).not.toThrow();
    expect(load(leaseTtlMs.minimum - 1, tickMs.minimum)).toThrow(/^leaseTtlMs: /);
    expect(load(leaseTtlMs.minimum, tickMs.minimum - 1)).toThrow(/^tickMs: /);
  });

  it("offers the worker every weight format the runtime builds, and no other", () => {
    const schema = JSON.parse(readFileSync(join(CHART, "values.schema.json"), "utf8")) as {
      properties: { cloudWorker: { properties: { weights: { enum: string[] } } } };
    };
    expect(schema.properties.cloudWorker.properties.weights.enum).toEqual([...WEIGHT_FORMATS]);
    const rendered = JSON.stringify(render("cloudWorker.weights=w8a8"));
    expect(rendered).toContain(JSON.stringify({ name: "TANDEM_WORKER_WEIGHTS", value: "w8a8" }));
  });

  it("passes the workers' quantization block size through, and refuses one the runtime would not take", () => {
    const schema = JSON.parse(readFileSync(join(CHART, "values.schema.json"), "utf8")) as {
      properties: { cloudWorker: { properties: { quantBlockSize: { enum: number[] } } } };
    };
    expect(schema.properties.cloudWorker.properties.quantBlockSize.enum).toEqual([...QUANT_BLOCK_SIZES]);
    const rendered = JSON.stringify(render("cloudWorker.weights=int4", "cloudWorker.quantBlockSize=64"));
    expect(rendered).toContain(JSON.stringify({ name: "TANDEM_WORKER_QUANT_BLOCK_SIZE", value: "64" }));
    const load = (size: string) => () => loadWorkerConfig({ TANDEM_WORKER_QUANT_BLOCK_SIZE: size });
    expect(load("64")).not.toThrow();
    expect(load("48")).toThrow(/^quantBlockSize: .*one of 16, 32, 64, 128, 256/);
    expect(load("512")).toThrow(/^quantBlockSize: /);
  });

  it("passes the workers' int4 head bits through (8 by default), and refuses others", () => {
    const schema = JSON.parse(readFileSync(join(CHART, "values.schema.json"), "utf8")) as {
      properties: { cloudWorker: { properties: { int4HeadBits: { enum: number[] } } } };
    };
    expect(schema.properties.cloudWorker.properties.int4HeadBits.enum).toEqual([...INT4_HEAD_BITS]);
    expect(JSON.stringify(render("cloudWorker.weights=int4"))).toContain(
      JSON.stringify({ name: "TANDEM_WORKER_INT4_HEAD_BITS", value: "8" }),
    );
    const rendered = JSON.stringify(render("cloudWorker.weights=int4", "cloudWorker.int4HeadBits=4"));
    expect(rendered).toContain(JSON.stringify({ name: "TANDEM_WORKER_INT4_HEAD_BITS", value: "4" }));
    const load = (bits: string) => () => loadWorkerConfig({ TANDEM_WORKER_INT4_HEAD_BITS: bits });
    expect(load("4")).not.toThrow();
    expect(load("6")).toThrow(/^int4HeadBits: /);
  });

  it("turns expert parallelism on, its Experts port reachable by the workers alone", () => {
    const manifests = render(
      "cloudWorker.tls.secretName=",
      "cloudWorker.insecure=true",
      "cloudWorker.expertParallel=true",
      "networkPolicy.enabled=true",
      "networkPolicy.workerIngressFrom[0].ipBlock.cidr=10.0.0.0/8",
    );
    const container = containerOf(manifests, "StatefulSet", "cloud-worker");
    expect(environmentOf(container)).toMatchObject({
      TANDEM_WORKER_EXPERT_PARALLEL: "true",
      TANDEM_WORKER_EXPERT_PORT: "50053",
      // Dropped experts give their memory back, on these workers alone (it slows prefill).
      [FREED_MEMORY_ENV.name]: FREED_MEMORY_ENV.value,
    });
    expect(container.ports).toContainEqual({ name: "experts", containerPort: 50053, protocol: "TCP" });
    // The Experts port takes the workers only; the devices' port keeps its peers.
    const policy = manifests.find(
      (m) => m.kind === "NetworkPolicy" && m.metadata.name.endsWith("cloud-worker"),
    )!;
    const workerLabels = manifests.find((m) => m.kind === "StatefulSet")!.spec.selector.matchLabels;
    expect(policy.spec.ingress).toContainEqual({
      ports: [{ port: 50053, protocol: "TCP" }],
      from: [{ podSelector: { matchLabels: workerLabels } }],
    });
    expect(policy.spec.ingress).toContainEqual({
      ports: [{ port: 50052, protocol: "TCP" }],
      from: [{ ipBlock: { cidr: "10.0.0.0/8" } }],
    });
    for (const m of manifests) expect(() => new (modelOf(m))(m).validate()).not.toThrow();
    // Over TLS too: the same Secret serves both ports.
    const secured = environmentOf(
      containerOf(render("cloudWorker.expertParallel=true"), "StatefulSet", "cloud-worker"),
    );
    expect(secured).toMatchObject({
      TANDEM_WORKER_EXPERT_PARALLEL: "true",
      TANDEM_WORKER_TLS_CERT: "/etc/tandem/tls/tls.crt",
    });
    // Off by default: no variable, no port, no extra rule.
    const plain = render("cloudWorker.tls.secretName=", "cloudWorker.insecure=true");
    const plainContainer = containerOf(plain, "StatefulSet", "cloud-worker");
    expect(environmentOf(plainContainer).TANDEM_WORKER_EXPERT_PARALLEL).toBeUndefined();
    expect(environmentOf(plainContainer)[FREED_MEMORY_ENV.name]).toBeUndefined();
    expect((plainContainer.ports ?? []).some((p: { name: string }) => p.name === "experts")).toBe(false);
  });

  it("refuses bad values, naming them", () => {
    const bad: [string, RegExp][] = [
      ["cloudWorker.split=0", /cloudWorker\/split.*minimum/],
      ["cloudWorker.weights=fp8", /cloudWorker\/weights/],
      ["cloudWorker.quantBlockSize=48", /cloudWorker\/quantBlockSize/],
      ["cloudWorker.int4HeadBits=2", /cloudWorker\/int4HeadBits/],
      ["nats.url=http://nats:4222", /nats\/url/],
      ["cluster=a:b", /cluster/],
      [`cluster=${"x".repeat(65)}`, /cluster.*maxLength/],
      ["controlPlane.leaseTtlMs=510", /controlPlane\/leaseTtlMs.*minimum/],
      ["batchWorker.kinds=generate\\,summarize", /batchWorker\/kinds/],
      [
        "cloudWorker.tls.secretName=",
        /cloudWorker\.tls\.secretName is empty: .* or set cloudWorker\.insecure=true/,
      ],
      ["nats.tls.clientCertSecret=nats-client", /nats\.tls\.clientCertSecret needs nats\.tls\.caSecret/],
      ["nats.credentials.controlPlane.type=password", /nats\/credentials\/controlPlane\/type/],
      ["nats.credentials.cloudWorker.key=../seed", /nats\/credentials\/cloudWorker\/key/],
      ["nats.credentials.batchWorker.secretName=x", /nats\/credentials.*batchWorker/],
      ["nats.credentialz=x", /nats.*credentialz/],
      ["controlPlane.healthPort=0", /controlPlane\/healthPort.*minimum/],
      ["batchWorker.healthPort=70000", /batchWorker\/healthPort.*maximum/],
      ["metrics.port=0", /metrics\/port.*minimum/],
      ["metrics.serviceMonitor.interval=soon", /metrics\/serviceMonitor\/interval/],
      ["metrics.serviceMonitr.enabled=true", /metrics.*serviceMonitr/],
      ["cloudWorker.expertParallel=yes", /cloudWorker\/expertParallel/],
    ];
    for (const [set, message] of bad) {
      const run = spawnSync(helm, ["template", "tandem", CHART, "--set", set], { encoding: "utf8" });
      expect(run.status, set).not.toBe(0);
      expect(run.stderr, set).toMatch(message);
    }
  });
});
