/**
 * An emulated edge link on loopback: a TCP proxy that delays every chunk by a one-way
 * latency and paces each direction at a bandwidth, keeping order. Used where the kernel
 * has no netem qdisc (this machine's has none; `tc qdisc add … netem` fails), so network
 * namespaces could give separation but not delay.
 */
import { createServer, connect, type Server, type Socket } from "node:net";

export interface LinkOptions {
  /** Delay added in each direction, ms. */
  oneWayDelayMs: number;
  /** Bandwidth of each direction, megabits per second. */
  rateMbit: number;
}

export interface EmulatedLink {
  address: string;
  close(): Promise<void>;
}

/** Forwards 127.0.0.1:<port> → target through the emulated link. */
export async function startLinkEmulator(
  target: { host: string; port: number },
  options: LinkOptions,
): Promise<EmulatedLink> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    pipeWithLink(client, upstream, options);
    pipeWithLink(upstream, client, options);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("close", closeBoth);
    upstream.on("close", closeBoth);
    client.on("error", closeBoth);
    upstream.on("error", closeBoth);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * One direction: a chunk leaves when the link is free (serialisation at the rate) and
 * arrives after the delay. Chunks wait in one FIFO served by one timer, so they never
 * overtake each other (separate timers with rounded delays could).
 */
function pipeWithLink(from: Socket, to: Socket, options: LinkOptions): void {
  const bytesPerMs = (options.rateMbit * 1e6) / 8 / 1000;
  let linkFreeAt = 0;
  const queue: { at: number; chunk: Buffer | null }[] = [];
  let timer: NodeJS.Timeout | undefined;
  const deliver = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && queue[0].at <= now + 0.5) {
      const { chunk } = queue.shift()!;
      if (to.destroyed) continue;
      if (chunk) to.write(chunk);
      else to.end();
    }
    if (queue.length > 0) timer = setTimeout(deliver, Math.max(0, queue[0].at - now));
  };
  const enqueue = (chunk: Buffer | null, bytes: number) => {
    const now = performance.now();
    linkFreeAt = Math.max(now, linkFreeAt) + bytes / bytesPerMs;
    queue.push({ at: linkFreeAt + options.oneWayDelayMs, chunk });
    if (!timer) timer = setTimeout(deliver, Math.max(0, queue[0].at - now));
  };
  from.on("data", (chunk: Buffer) => enqueue(chunk, chunk.length));
  from.on("end", () => enqueue(null, 0));
}
