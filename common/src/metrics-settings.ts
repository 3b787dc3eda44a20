/**
 * Settings of a server's listening address (`host:port`, or empty for none), and the
 * `metricsAddress` setting every program takes (runProgram adds it to each program's
 * schema): where Prometheus scrapes GET /metrics. Off unless set: tests run many programs
 * on one machine, and a device must not open a port it was not asked to.
 */
import { z } from "zod";
import { HOST_PORT_PATTERN } from "./host-port.ts";

/** `host:port` with a port in range, e.g. `0.0.0.0:9464` or `[::1]:0`. */
function isListenAddress(value: string): boolean {
  if (!HOST_PORT_PATTERN.test(value)) return false;
  return Number(value.slice(value.lastIndexOf(":") + 1)) <= 65535;
}

/**
 * A setting naming where a server listens: `host:port` (port 0 picks a free one), or empty
 * for no server. `example` is shown in the refusal of a bad value.
 */
export function listenAddressSetting(options: { default: string; example: string; description: string }) {
  return z
    .string()
    .default(options.default)
    .refine((value) => value === "" || isListenAddress(value), {
      message: `must be host:port (e.g. ${options.example}; port 0 picks a free one), or empty for none`,
    })
    .meta({ description: options.description });
}

export const METRICS_ADDRESS_SETTING = listenAddressSetting({
  default: "",
  example: "0.0.0.0:9464",
  description: "host:port of a Prometheus endpoint, GET /metrics (port 0 picks a free one; empty: none)",
});

/** `host:port` → its parts, an IPv6 host without brackets (as node's listen takes it). */
export function listenAddressParts(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  return { host, port: Number(address.slice(colon + 1)) };
}
