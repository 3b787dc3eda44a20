/**
 * What every party of a cluster must agree on, defined once: where NATS is, the cluster's
 * name (it namespaces everything of one deployment on shared servers: NATS buckets and
 * subjects, BullMQ queues in Redis), and the heartbeat timing (workers beat every
 * heartbeatMs; readers count a node dead after heartbeatTtlMs without one, i.e. after
 * four missed beats). Here rather than beside the NATS code, so a program's settings can
 * name them without loading a NATS client.
 */
import { z } from "zod";
import { InvalidArgumentError } from "./errors.ts";

export const CLUSTER_DEFAULTS = {
  natsUrl: "nats://127.0.0.1:4222",
  cluster: "default",
  heartbeatMs: 500,
  heartbeatTtlMs: 2000,
} as const;

/** A cluster name goes into NATS bucket and subject names and Redis keys: it must be safe in each. */
const CLUSTER_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const CLUSTER_NAME_RULE = `must be text matching ${CLUSTER_NAME}`; // as CLUSTER_NAME_SETTING words it

/** Throws InvalidArgumentError naming `cluster` unless `name` is a valid cluster name. */
export function checkClusterName(name: string): void {
  if (!CLUSTER_NAME.test(name))
    throw new InvalidArgumentError("cluster", `${CLUSTER_NAME_RULE}, got ${JSON.stringify(name)}`);
}

/**
 * How a program that joins a cluster proves itself to NATS, and how it knows NATS (files,
 * e.g. a mounted Secret). The TLS settings are checked together when the program connects
 * (cluster's connectNats), so every program that spreads these gets the same rules.
 */
export const NATS_CREDENTIAL_SETTINGS = {
  natsNkeySeed: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "file holding this party's NATS NKey seed (SU…); NATS's permissions for it apply" }),
  natsCreds: z.string().min(1).optional().meta({ description: "NATS .creds file (user JWT and seed)" }),
  natsTlsCa: z.string().min(1).optional().meta({
    description:
      "PEM CA of the NATS servers: connect to NATS over TLS only, and verify the server against it",
  }),
  natsTlsCert: z.string().min(1).optional().meta({
    description: "PEM client certificate for a NATS that verifies clients (with natsTlsKey and natsTlsCa)",
  }),
  natsTlsKey: z.string().min(1).optional().meta({ description: "PEM private key of natsTlsCert" }),
};

/** The files those settings name, as a NATS connection (cluster's NatsCredentials) takes them. */
export function natsCredentialsOf(settings: {
  natsNkeySeed?: string;
  natsCreds?: string;
  natsTlsCa?: string;
  natsTlsCert?: string;
  natsTlsKey?: string;
}): {
  nkeySeedFile?: string;
  credsFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
} {
  const tlsSet =
    settings.natsTlsCa !== undefined ||
    settings.natsTlsCert !== undefined ||
    settings.natsTlsKey !== undefined;
  return {
    nkeySeedFile: settings.natsNkeySeed,
    credsFile: settings.natsCreds,
    tls: tlsSet
      ? { caFile: settings.natsTlsCa, certFile: settings.natsTlsCert, keyFile: settings.natsTlsKey }
      : undefined,
  };
}

/**
 * Settings that work only together (a certificate and its key, say), checked in a
 * schema's superRefine: once any of `keys` is set, each one missing is an issue at its
 * own path, "required with" the others, so the operator learns the whole set at once.
 */
export function requireTogether<Settings extends object>(
  settings: Settings,
  ctx: z.RefinementCtx,
  keys: (keyof Settings & string)[],
): void {
  if (keys.every((key) => settings[key] === undefined)) return;
  for (const key of keys) {
    if (settings[key] !== undefined) continue;
    const others = keys.filter((other) => other !== key);
    const named = others.length === 1 ? others[0] : `${others.slice(0, -1).join(", ")} and ${others.at(-1)}`;
    ctx.addIssue({ code: "custom", path: [key], message: `required with ${named}` });
  }
}

/** The `cluster` setting every program and command that joins a cluster takes. */
export const CLUSTER_NAME_SETTING = z
  .string()
  .regex(CLUSTER_NAME)
  .default(CLUSTER_DEFAULTS.cluster)
  .meta({ description: "cluster name: namespaces its NATS buckets and subjects and its BullMQ queues" });
