/**
 * One Registry per program, never prom-client's global one: tests run several programs
 * in one process, and each must report its own series. The default process metrics
 * (CPU, memory, event-loop lag, handles) go on it too.
 */
import { collectDefaultMetrics, Registry } from "prom-client";

export function createProgramRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}
