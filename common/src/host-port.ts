/**
 * `host:port` as servers advertise it and edges dial it: a DNS name or IPv4 address, or
 * an IPv6 address in brackets. One pattern for the worker that advertises an address,
 * the records that carry it and the edge that is sent there.
 */
export const HOST_PORT_PATTERN = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/;

/** `host:port`, an IPv6 host in brackets (where a bare `:::50052` would be ambiguous). */
export function hostPort(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}
