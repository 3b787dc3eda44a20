/** Waiting for a server a test started to listen on its port. */
import { connect as tcpConnect } from "node:net";

/** Resolves once 127.0.0.1:`port` accepts connections; rejects naming `server` after `timeoutMs`. */
export function waitForPort(port: number, server: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = tcpConnect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve();
      });
      socket.once("error", () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`${server} did not listen on ${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}
