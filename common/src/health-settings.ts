/**
 * The settings of a program's own health service (grpc.health.v1, for probes), for
 * programs that serve nothing else: off unless `healthPort` is set.
 */
import { z } from "zod";

/** `servingWhen` completes "SERVING …" in the description: what healthy means for the program. */
export function healthSettings(servingWhen: string) {
  return {
    healthHost: z
      .string()
      .min(1)
      .default("127.0.0.1")
      .meta({ description: "address of the health service (with healthPort)" }),
    healthPort: z
      .int()
      .min(1)
      .max(65535)
      .optional()
      .meta({
        description: `port of a gRPC health service (grpc.health.v1, plaintext) for probes: SERVING ${servingWhen} (none: off)`,
      }),
  };
}
