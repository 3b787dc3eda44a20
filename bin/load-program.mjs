// Imports a program's package, with one clear line instead of a stack trace when it has
// not been built yet.
import module from "node:module";

// V8's code cache for every module a program loads (Node >= 22.1; absent on 20): a start
// after the first skips compiling grpc-js, protobufjs, zod and Tandem's own code. It lives
// in NODE_COMPILE_CACHE, else the OS temp dir; NODE_DISABLE_COMPILE_CACHE=1 turns it off.
// A directory it cannot write only means no cache.
module.enableCompileCache?.();

export async function loadProgram(name) {
  try {
    return await import(name);
  } catch (error) {
    if (error?.code === "ERR_MODULE_NOT_FOUND" && String(error.message).includes(`${name.slice(8)}/dist/`)) {
      process.stderr.write(`${name} is not built: run "npm run build" (npm ci does it once)\n`);
      process.exit(1);
    }
    throw error;
  }
}
