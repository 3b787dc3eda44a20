/**
 * Starting Tandem's programs as real processes in tests: spawn, wait for the line that
 * says they listen, and stop them (gracefully or with SIGKILL) afterwards.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";

const BIN = join(import.meta.dirname, "..", "..", "bin");

export interface RunningProcess {
  child: ChildProcess;
  address: string;
  /** The edge agent's OpenAI-compatible HTTP API (its ready line's `http host:port`), if it serves one. */
  httpAddress?: string;
  output: () => string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A port that was free a moment ago (the kernel picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port")),
      );
    });
  });
}

export type ProgramName =
  "tandem-edge" | "tandem-cloud-worker" | "tandem-control-plane" | "tandem-batch-worker";

export interface StartOptions {
  /** Where the bins are. @default this checkout's bin/ */
  binDir?: string;
  /** Flags for node itself, before the bin (e.g. to run the sources through tsx). @default [] */
  nodeArgs?: string[];
}

/**
 * Spawns bin/<program>.mjs with flags and resolves once it prints `listening host:port`.
 * An edge agent serves its HTTP API on a free port unless the flags say otherwise (its
 * default, 8080, would be taken by the first of the tests running side by side).
 */
export async function startProgram(
  program: ProgramName,
  flags: Record<string, string | number>,
  env: NodeJS.ProcessEnv = {},
  options: StartOptions = {},
): Promise<RunningProcess> {
  // Only this checkout's bins know httpAddress (another checkout's, an older commit's, may not).
  const withHttp =
    program === "tandem-edge" && !("httpAddress" in flags) && options.binDir === undefined
      ? { ...flags, httpAddress: "127.0.0.1:0" }
      : flags;
  const args = [
    ...(options.nodeArgs ?? []),
    join(options.binDir ?? BIN, `${program}.mjs`),
    ...Object.entries(withHttp).flatMap(([k, v]) => [`--${k}`, String(v)]),
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, TANDEM_LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  let httpAddress: string | undefined;
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${program} did not start in 60 s:\n${output}`)), 60_000);
    child.stdout!.on("data", (d: Buffer) => {
      output += d.toString();
      const match = /(?:listening|running) (\S+)/.exec(output);
      if (match) {
        httpAddress = /^(?:listening) \S+ http (\S+)/m.exec(output)?.[1];
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${program} exited with ${code} before listening:\n${output}`));
    });
  });
  return {
    child,
    address,
    httpAddress,
    output: () => output,
    async kill(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill(signal);
      await exited;
    },
  };
}

export interface CliResult {
  stdout: string;
  stderr: string;
  /** The exit code (0 on success). */
  code: number;
}

/** Runs a bin to completion with exactly `env`. */
function runBin(
  bin: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  options: StartOptions = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...(options.nodeArgs ?? []), join(options.binDir ?? BIN, `${bin}.mjs`), ...args],
      { env, maxBuffer: 64 << 20, timeout: 300_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ stdout, stderr, code });
      },
    );
  });
}

/** Runs `tandem …` (bin/tandem.mjs) to completion, as a user would, with exactly `env`. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  options: StartOptions = {},
): Promise<CliResult> {
  return runBin("tandem", args, env, options);
}

/** Runs a program (bin/<program>.mjs) to completion: for --help and for settings it refuses. */
export function runProgram(
  program: ProgramName,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<CliResult> {
  return runBin(program, args, { ...process.env, TANDEM_LOG_LEVEL: "warn", ...env });
}
