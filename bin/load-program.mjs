// Imports a program's package, with one clear line instead of a stack trace when it has
// not been built yet.
import module from "node:module";

// V8's code cache for every module a program loads (Node >= 22.1; absent on 20): a start
// after the first skips compiling grpc-js, protobufjs, zod and Tandem's own code. It lives
// in NODE_COMPILE_CACHE, else the OS temp dir; NODE_DISABLE_COMPILE_CACHE=1 turns it off.
// A directory it cannot write only means no cache.
module.enableCompileCache?.();

/**
 * The service.name of each program's spans (OTEL_SERVICE_NAME overrides it): the edge and
 * the worker, the two that make spans (a request's, its escalations', the frames').
 */
const SERVICE_NAMES = {
  "@tandem/edge-agent": "tandem-edge",
  "@tandem/cloud-worker": "tandem-cloud-worker",
};

/**
 * Tracing is off unless TANDEM_TRACING=1: OTEL_TRACES_EXPORTER alone does not turn it on,
 * since its standard default (otlp) would make an unset variable mean "on". Once on, the
 * OTEL_* variables say where spans go. It starts before the program's modules load, so
 * that a program's first spans find the SDK running.
 */
async function startTracingIfAsked(name) {
  const serviceName = SERVICE_NAMES[name];
  if (!serviceName || !["1", "true"].includes(process.env.TANDEM_TRACING ?? "")) return;
  const { startTracing } = await import("@tandem/common/tracing-sdk");
  startTracing({ serviceName });
}

export async function loadProgram(name) {
  try {
    await startTracingIfAsked(name);
    return await import(name);
  } catch (error) {
    if (error?.code === "ERR_MODULE_NOT_FOUND" && String(error.message).includes(`${name.slice(8)}/dist/`)) {
      process.stderr.write(`${name} is not built: run "npm run build" (npm ci does it once)\n`);
      process.exit(1);
    }
    throw error;
  }
}
