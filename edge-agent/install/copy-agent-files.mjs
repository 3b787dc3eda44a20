// Copies what the edge agent runs from a built checkout into an install prefix:
//   node copy-agent-files.mjs CHECKOUT PREFIX
// The agent runs its bundle (edge-agent/dist/bundle/program.mjs: the program and every
// dependency in one module), so a device gets that, the .proto files server reflection
// reads, and only the packages the bundle leaves outside — with what they depend on, and
// onnxruntime-node's native binaries for this platform only — not the checkout's
// node_modules (dev tools and every platform's binaries: ~580 MB).
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { BUNDLE_EXTERNALS, LOADED_BY_NAME } from "../../scripts/bundle-externals.mjs";

const [checkout, prefix] = process.argv.slice(2);
if (!checkout || !prefix) {
  process.stderr.write("usage: node copy-agent-files.mjs CHECKOUT PREFIX\n");
  process.exit(2);
}

/**
 * The packages the bundle loads from node_modules; @grpc/reflection's peer dependency,
 * @grpc/grpc-js, comes with it (a peer is copied like a dependency).
 */
const RUNTIME_PACKAGES = [...BUNDLE_EXTERNALS, ...LOADED_BY_NAME];

const copy = (path) => {
  mkdirSync(dirname(join(prefix, path)), { recursive: true });
  cpSync(join(checkout, path), join(prefix, path), { recursive: true });
};

copy("bin/tandem-edge.mjs");
copy("bin/load-program.mjs");
copy("edge-agent/package.json");
copy("edge-agent/dist/bundle");
// The proto package: its .proto files, and its entry, by which the bundle finds them.
copy("proto/package.json");
copy("proto/dist");
copy("proto/tandem");
copy("proto/grpc");

// The bin imports @tandem/edge-agent/program, and the bundle resolves @tandem/proto: links
// as npm's workspaces make them.
for (const name of ["edge-agent", "proto"]) {
  const link = join(prefix, "node_modules", "@tandem", name);
  mkdirSync(dirname(link), { recursive: true });
  if (!existsSync(link)) symlinkSync(join("..", "..", name), link);
}

/** The directory of package `name` as node would find it from `from` (a package directory). */
function packageDir(name, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return candidate;
    if (dir === checkout || dirname(dir) === dir) throw new Error(`${name} is not installed (from ${from})`);
  }
}

/** onnxruntime-node ships binaries for every platform; keep this one's. */
const platformDir = `${process.platform}${sep}${process.arch}`;
function keep(source) {
  const napi = source.match(/onnxruntime-node[\\/]bin[\\/]napi-v\d+[\\/](.+)$/);
  if (!napi) return true;
  const rest = napi[1];
  return platformDir.startsWith(rest) || rest.startsWith(platformDir);
}

// The packages and, transitively, their dependencies, each copied to where it was found.
const pending = RUNTIME_PACKAGES.map((name) => packageDir(name, checkout));
const copied = new Set();
while (pending.length > 0) {
  const dir = pending.pop();
  if (copied.has(dir)) continue;
  copied.add(dir);
  cpSync(dir, join(prefix, relative(checkout, dir)), { recursive: true, filter: keep });
  const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const needed = { ...manifest.dependencies, ...manifest.peerDependencies };
  for (const dependency of Object.keys({ ...needed, ...manifest.optionalDependencies })) {
    try {
      pending.push(packageDir(dependency, dir));
    } catch (error) {
      // An optional dependency for another platform is not installed: nothing to copy.
      if (dependency in needed) throw error;
    }
  }
}
