// Imports a program's package, with one clear line instead of a stack trace when it has
// not been built yet.
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
