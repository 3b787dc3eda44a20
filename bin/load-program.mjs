// Imports a program's module, with one clear line instead of a stack trace when it has
// not been built yet.
import module from "node:module";

// V8's code cache for every module a program loads (Node >= 22.1; absent on 20): a start
// after the first skips compiling the program's bundle or the CLI's modules. It lives in
// NODE_COMPILE_CACHE, else the OS temp dir; NODE_DISABLE_COMPILE_CACHE=1 turns it off.
// A directory it cannot write only means no cache.
module.enableCompileCache?.();

/**
 * `specifier` is a package ("@tandem/cli") or a server's program, built into one file
 * ("@tandem/edge-agent/program", see scripts/bundle-programs.mjs).
 */
export async function loadProgram(specifier) {
  try {
    return await import(specifier);
  } catch (error) {
    if (error?.code === "ERR_MODULE_NOT_FOUND" && String(error.message).includes("/dist/")) {
      process.stderr.write(`${specifier} is not built: run "npm run build" (npm ci does it once)\n`);
      process.exit(1);
    }
    throw error;
  }
}
