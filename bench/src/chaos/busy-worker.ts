/**
 * Which cloud worker is serving the generation in flight. The session id is the edge's own
 * (a client never sees it) and a generation is over long before a heartbeat reports its
 * session (≈5 ms a token on the demo model, heartbeats every 500 ms), so the owner is told
 * by its traffic instead: the bytes each worker process has read (Linux's
 * /proc/PID/io `rchar`, sockets included) since the generation began. The owner reads every
 * escalated hidden state (≥ 1 KiB a position in fp32); the other reads only its NATS traffic.
 */
import { readFileSync } from "node:fs";

/** Bytes the process has read through read-like system calls so far. */
export function bytesRead(pid: number): number {
  const match = /^rchar:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"));
  if (!match) throw new Error(`no rchar in /proc/${pid}/io`);
  return Number(match[1]);
}

/** The reading of every worker at one moment: start one before the generation, ask it during. */
export class TrafficSnapshot {
  private readonly start: Map<string, number>;

  constructor(private readonly pids: Map<string, number>) {
    this.start = new Map([...pids].map(([id, pid]) => [id, bytesRead(pid)]));
  }

  /** The worker that read the most since the snapshot, and how much each read. */
  busiest(): { id: string; bytes: Record<string, number> } {
    const bytes: Record<string, number> = {};
    for (const [id, pid] of this.pids) bytes[id] = bytesRead(pid) - this.start.get(id)!;
    const [id] = Object.entries(bytes).sort((a, b) => b[1] - a[1])[0];
    return { id, bytes };
  }
}
