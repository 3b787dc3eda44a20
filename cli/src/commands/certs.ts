/**
 * `tandem certs`: the deployment's certificate authority (see SECURITY.md). Writes the CA,
 * server certificates for cloud workers (and the edge's public API), device certificates
 * for edge agents, and the revocation list workers read.
 */
import { z } from "zod";
import { UsageError } from "@tandem/common";
import {
  DEFAULT_CERTIFICATE_DAYS,
  caPaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  issueServerCertificate,
  revokeDevice,
} from "@tandem/proto/certificates";
import type { CommandDefinition } from "../command.ts";

const ACTIONS = ["init", "issue-server", "issue-device", "revoke"] as const;

const CERTS_OPTIONS = z
  .object({
    dir: z
      .string()
      .min(1)
      .default("tandem-certs")
      .meta({ description: "where the CA and certificates live" }),
    san: z.array(z.string().min(1)).optional().meta({
      description: "issue-server: DNS names and IP addresses the server is reached at, comma-separated",
    }),
    days: z
      .int()
      .min(1)
      .max(36500)
      .optional()
      .meta({
        description: `validity in days (default: CA ${DEFAULT_CERTIFICATE_DAYS.ca}, others ${DEFAULT_CERTIFICATE_DAYS.leaf})`,
      }),
  })
  .strict();

export const certsCommand: CommandDefinition<typeof CERTS_OPTIONS> = {
  name: "certs",
  summary: "the deployment's CA: server and device certificates, revocation",
  description: [
    "tandem certs init                                  create the CA (DIR/ca.pem, ca.key) and an empty revocation list",
    "tandem certs issue-server NAME --san HOST,IP,...   a worker's certificate (DIR/servers/NAME.pem, .key)",
    "tandem certs issue-device ID                       a device's certificate; workers know it as ID (DIR/devices/ID.pem, .key)",
    "tandem certs revoke ID                             add the device to DIR/revoked.crl; workers refuse its next stream",
    "Private keys are written with mode 0600.",
  ].join("\n"),
  options: CERTS_OPTIONS,
  positionals: [
    { name: "ACTION", description: ACTIONS.join(", ") },
    {
      name: "NAME",
      description: "issue-server: the server's name; issue-device, revoke: the device id",
      required: false,
    },
  ],
  async run(values, [action, name]) {
    if (!(ACTIONS as readonly string[]).includes(action))
      throw new UsageError("ACTION", `must be one of ${ACTIONS.join(", ")}, got ${JSON.stringify(action)}`);
    if (action === "init") {
      if (name !== undefined) throw new UsageError(name, "is not expected here");
      const paths = await initCertificateAuthority(values.dir, { days: values.days });
      console.log(JSON.stringify({ ca: paths.cert, key: paths.key, crl: caPaths(values.dir).crl }));
      return 0;
    }
    if (!name) throw new UsageError("NAME", "is required");
    if (action === "issue-server") {
      if (!values.san?.length)
        throw new UsageError("--san", "is required: the names and addresses clients dial");
      const paths = await issueServerCertificate(values.dir, name, values.san, { days: values.days });
      console.log(JSON.stringify({ server: name, ...paths, ca: caPaths(values.dir).cert }));
      return 0;
    }
    if (values.san !== undefined) throw new UsageError("--san", `is for issue-server, not ${action}`);
    if (action === "issue-device") {
      const paths = await issueDeviceCertificate(values.dir, name, { days: values.days });
      console.log(JSON.stringify({ device: name, ...paths, ca: caPaths(values.dir).cert }));
      return 0;
    }
    if (values.days !== undefined) throw new UsageError("--days", `is for init and issue-*, not ${action}`);
    const serials = await revokeDevice(values.dir, name);
    console.log(JSON.stringify({ revoked: name, serials, crl: caPaths(values.dir).crl }));
    return 0;
  },
};
