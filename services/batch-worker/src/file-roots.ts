/**
 * Where a batch job may read and write: the paths in a job's data (a model, a calibration,
 * a text file, an output, a cache directory) must lie inside one of the worker's file
 * roots. Anyone who can put a job in Redis chooses those paths, so without roots a job could
 * read any file the worker can (a key, a config) through a model or text path, or write
 * where it should not. A path with a `..` segment is refused outright; the rest are
 * resolved (symbolic links followed, as far as the path exists) before they are compared.
 */
import { existsSync, realpathSync } from "node:fs";
import { dirname, isAbsolute, relative, resolve, sep } from "node:path";
import { InvalidArgumentError } from "@tandem/common";
import type { JobDataByKind, JobKind } from "./batch-jobs.ts";

/** The fields of each kind's data that name files or directories. */
const PATH_FIELDS: { [K in JobKind]: (keyof JobDataByKind[K] & string)[] } = {
  generate: ["model", "calibration"],
  calibrate: ["model", "textFile", "out"],
  "build-graphs": ["model", "calibration", "cacheDir"],
};

/** Throws InvalidArgumentError naming the first path field outside every root. */
export function checkJobPaths<K extends JobKind>(
  kind: K,
  data: JobDataByKind[K],
  roots: readonly string[],
): void {
  const realRoots = roots.map((root) => realPath(resolve(root)));
  for (const field of PATH_FIELDS[kind]) {
    const value = data[field] as unknown;
    if (typeof value !== "string") continue;
    if (value.split(/[\\/]/).includes(".."))
      throw new InvalidArgumentError(field, `"${value}" must not contain ".."`);
    const path = realPath(resolve(value));
    if (!realRoots.some((root) => isInside(path, root)))
      throw new InvalidArgumentError(
        field,
        `${value} is outside the worker's file roots (${roots.join(", ")})`,
      );
  }
}

function isInside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/** The real path of the longest existing prefix of `path`, with the rest appended. */
function realPath(path: string): string {
  let existing = path;
  while (!existsSync(existing) && dirname(existing) !== existing) existing = dirname(existing);
  const rest = relative(existing, path);
  return resolve(realpathSync(existing), rest);
}
