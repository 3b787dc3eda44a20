/**
 * Scraping a program's Prometheus endpoint in tests: GET /metrics over HTTP, the text
 * exposition parsed into families (their names, from # TYPE) and samples.
 */
import type { RunningProcess } from "./processes.ts";
import { until } from "./until.ts";

export interface Scrape {
  /** The text as served. */
  text: string;
  /** Metric family names declared (# TYPE lines), with or without samples yet. */
  families: Set<string>;
  /** The sample `name{labels}` (every label given must match; others may be present); undefined when none matches. */
  value(name: string, labels?: Record<string, string>): number | undefined;
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseSample(line: string): Sample {
  const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
  if (!match) throw new Error(`not a Prometheus sample: ${line}`);
  const labels: Record<string, string> = {};
  for (const [, key, raw] of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
    labels[key] = raw.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
  return { name: match[1], labels, value: Number(match[3]) };
}

export function parseMetrics(text: string): Scrape {
  const families = new Set<string>();
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) families.add(line.split(" ")[2]);
    else if (line.trim() !== "" && !line.startsWith("#")) samples.push(parseSample(line));
  }
  return {
    text,
    families,
    value(name, labels = {}) {
      return samples.find(
        (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
      )?.value;
    },
  };
}

/** GET http://address/metrics; anything but 200 throws. */
export async function scrapeMetrics(address: string): Promise<Scrape> {
  const response = await fetch(`http://${address}/metrics`);
  if (response.status !== 200) throw new Error(`GET ${address}/metrics answered ${response.status}`);
  return parseMetrics(await response.text());
}

/**
 * Where a program started with `metricsAddress` (port 0 too) serves them: the address
 * of its "serving metrics" log line (logged at info, so start it with TANDEM_LOG_LEVEL=info).
 */
export async function metricsAddressOf(program: RunningProcess): Promise<string> {
  const pattern = /"address":"([^"]+)"[^\n]*"msg":"serving metrics"/;
  await until("the program to log its metrics address", () => pattern.test(program.output()), 20_000);
  return pattern.exec(program.output())![1];
}
