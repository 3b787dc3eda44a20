#!/usr/bin/env node
// The build's second step, after `tsc -b`: each server program's compiled entry
// (dist/program.js) and everything it imports, Tandem's packages and their dependencies,
// into one ES module, dist/bundle/program.mjs, which the bins run (the packages'
// "./program" export). On Node 20, which has no compile cache, a server spent ~50 ms of a
// ~300 ms start resolving, reading and linking some five hundred module files; one file
// spares most of that.
//
// Left outside, loaded from node_modules as before: BUNDLE_EXTERNALS (packages that read
// their own files by path). Modules a program imports only when it needs them (prom-client
// with metrics on, the NATS client in a cluster, OpenTelemetry's SDK with TANDEM_TRACING=1)
// are in the bundle but not run until then.
import { build } from "esbuild";
import { rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BUNDLE_EXTERNALS } from "./bundle-externals.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The packages with a server program, each with src/program.ts. */
const PROGRAM_PACKAGES = [
  "edge-agent",
  "services/cloud-worker",
  "services/control-plane",
  "services/batch-worker",
];

/** The programs that may run a host-routed MoE segment with expert threads. */
const PROGRAMS_WITH_EXPERT_THREADS = ["edge-agent", "services/cloud-worker"];

/**
 * CommonJS dependencies call require() for node's modules and read their own path; an ES
 * module has neither, so the bundle defines them for its own scope.
 */
const COMMONJS_SHIMS = [
  'import { createRequire as __tandemCreateRequire } from "node:module";',
  'import { fileURLToPath as __tandemFileURLToPath } from "node:url";',
  "const require = __tandemCreateRequire(import.meta.url);",
  "const __filename = __tandemFileURLToPath(import.meta.url);",
  'const __dirname = __tandemFileURLToPath(new URL(".", import.meta.url));',
].join("\n");

await Promise.all(
  PROGRAM_PACKAGES.map(async (pkg) => {
    const outdir = join(ROOT, pkg, "dist", "bundle");
    await rm(outdir, { recursive: true, force: true });
    await build({
      entryPoints: {
        program: join(ROOT, pkg, "dist", "program.js"),
        // The program of the expert threads (runtime's expert-threads.ts starts it from the
        // directory of the module that asks, here the bundle's).
        ...(PROGRAMS_WITH_EXPERT_THREADS.includes(pkg) && {
          "expert-host-worker": join(ROOT, "runtime", "dist", "engine", "expert-host-worker.js"),
        }),
      },
      outdir,
      outExtension: { ".js": ".mjs" },
      // One file, no chunks: with code splitting, esbuild hands a dynamic import of a
      // CommonJS package (cockatiel) only its default export, where node gives named ones.
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      external: BUNDLE_EXTERNALS,
      banner: { js: COMMONJS_SHIMS },
      // Whitespace and syntax only: names stay as written, for stack traces and error names.
      minifyWhitespace: true,
      minifySyntax: true,
      sourcemap: "linked",
      logLevel: "warning",
    });
  }),
);
