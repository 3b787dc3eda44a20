/** Secrets kept in files (a mounted Kubernetes Secret), never in settings or URLs. */
import { readFileSync } from "node:fs";
import { FailedPreconditionError } from "./errors.ts";

/**
 * The content of the secret file `path`, without the trailing newline an editor or `echo`
 * adds. A file that cannot be read is a FailedPreconditionError naming `setting`.
 */
export function readSecretFile(path: string, setting: string): string {
  try {
    return readFileSync(path, "utf8").replace(/\r?\n$/, "");
  } catch (error) {
    throw new FailedPreconditionError(setting, `cannot read ${path} (${(error as Error).message})`);
  }
}
