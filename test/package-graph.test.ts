/**
 * The package graph (package-graph.json) is the one statement of which package may
 * depend on which. Every package's package.json, tsconfig references and the workspace
 * list agree with it, it has no cycle, and the dependency check built from it
 * (.dependency-cruiser.cjs, run by `npm test`) refuses an import the table forbids.
 */
import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");
interface PackageEntry {
  name: string;
  dir: string;
  what: string;
  dependsOn: string[];
}
const { packages } = JSON.parse(readFileSync(join(ROOT, "package-graph.json"), "utf8")) as {
  packages: PackageEntry[];
};
const readJson = (path: string) => JSON.parse(readFileSync(join(ROOT, path), "utf8"));
const scratch = mkdtempSync(join(tmpdir(), "tandem-package-graph-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("package-graph.json", () => {
  it("lists exactly the npm workspaces", () => {
    expect(packages.map((p) => p.dir).sort()).toEqual([...readJson("package.json").workspaces].sort());
  });

  it("is what every package.json declares and every tsconfig references", () => {
    for (const p of packages) {
      const manifest = readJson(join(p.dir, "package.json"));
      expect(manifest.name).toBe(`@tandem/${p.name}`);
      const declared = Object.keys(manifest.dependencies ?? {})
        .filter((d) => d.startsWith("@tandem/"))
        .map((d) => d.slice("@tandem/".length));
      expect({ package: p.name, deps: declared.sort() }).toEqual({
        package: p.name,
        deps: [...p.dependsOn].sort(),
      });
      const references = (readJson(join(p.dir, "tsconfig.json")).references ?? []).map(
        (r: { path: string }) => packages.find((q) => join(p.dir, r.path) === q.dir)?.name,
      );
      expect({ package: p.name, references: references.sort() }).toEqual({
        package: p.name,
        references: [...p.dependsOn].sort(),
      });
    }
  });

  it("is what the root build references and what the image copies, package by package", () => {
    const dirs = packages.map((p) => p.dir).sort();
    expect(
      readJson("tsconfig.json")
        .references.map((r: { path: string }) => r.path)
        .sort(),
    ).toEqual(dirs);
    // The image's second stage installs each package's manifest, then copies its build.
    const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
    const copied = (what: string) =>
      [...dockerfile.matchAll(new RegExp(`^COPY --from=build /src/(\\S+)/${what} `, "gm"))]
        .map((m) => m[1])
        .sort();
    expect(copied("package.json")).toEqual(dirs);
    expect(copied("dist")).toEqual(dirs);
  });

  it("has no cycle, and edge agent and cloud services never depend on each other", () => {
    const order: string[] = [];
    const visit = (name: string, path: string[]) => {
      if (order.includes(name)) return;
      if (path.includes(name)) throw new Error(`cycle: ${[...path, name].join(" → ")}`);
      for (const dep of packages.find((p) => p.name === name)!.dependsOn) visit(dep, [...path, name]);
      order.push(name);
    };
    for (const p of packages) visit(p.name, []);
    expect(order).toHaveLength(packages.length);
    const programs = ["edge-agent", "cloud-worker", "control-plane", "batch-worker"];
    for (const p of packages.filter((q) => programs.includes(q.name)))
      expect(p.dependsOn.filter((d) => programs.includes(d))).toEqual([]);
  });
});

describe("the dependency check", () => {
  /** A copy of the check's configuration over a few files laid out like the repository. */
  async function check(files: Record<string, string>): Promise<{ ok: boolean; output: string }> {
    const dir = mkdtempSync(join(scratch, "case-"));
    for (const name of [".dependency-cruiser.cjs", "package-graph.json"])
      cpSync(join(ROOT, name), join(dir, name));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    const depcruise = join(ROOT, "node_modules", ".bin", "depcruise");
    try {
      const { stdout } = await promisify(execFile)(
        depcruise,
        ["--config", ".dependency-cruiser.cjs", "--output-type", "err", "."],
        { cwd: dir },
      );
      return { ok: true, output: stdout };
    } catch (error) {
      return { ok: false, output: (error as { stdout: string }).stdout };
    }
  }

  it("accepts an import the table allows, through the other package's index", async () => {
    const result = await check({
      "common/src/index.ts": "export const base = 1;\n",
      "runtime/src/index.ts":
        'import { base } from "../../common/src/index.ts";\nexport const engine = base;\n',
    });
    expect(result).toMatchObject({ ok: true });
  });

  it("refuses an import the table forbids, naming the rule and both files", async () => {
    const result = await check({
      "edge-agent/src/index.ts": "export const agent = 1;\n",
      "runtime/src/index.ts":
        'import { agent } from "../../edge-agent/src/index.ts";\nexport const engine = agent;\n',
    });
    expect(result.ok).toBe(false);
    expect(result.output).toContain(
      "runtime-depends-only-on-common-proto: runtime/src/index.ts → edge-agent/src/index.ts",
    );
  });

  it("refuses a deep import into another package, and integration tests past an index", async () => {
    const result = await check({
      "common/src/index.ts": 'export * from "./errors.ts";\n',
      "common/src/errors.ts": "export class TandemError extends Error {}\n",
      "runtime/src/index.ts":
        'import { TandemError } from "../../common/src/errors.ts";\nexport const E = TandemError;\n',
      "test/some.test.ts":
        'import { TandemError } from "../common/src/errors.ts";\nexport const F = TandemError;\n',
    });
    expect(result.ok).toBe(false);
    expect(result.output).toContain(
      "runtime-imports-others-through-their-index: runtime/src/index.ts → common/src/errors.ts",
    );
    expect(result.output).toContain(
      "integration-tests-use-entry-points: test/some.test.ts → common/src/errors.ts",
    );
  });

  it("refuses an import cycle", async () => {
    const result = await check({
      "runtime/src/a.ts": 'import { b } from "./b.ts";\nexport const a = () => b;\n',
      "runtime/src/b.ts": 'import { a } from "./a.ts";\nexport const b = () => a;\n',
    });
    expect(result.ok).toBe(false);
    expect(result.output).toContain("no-circular");
  });
});
