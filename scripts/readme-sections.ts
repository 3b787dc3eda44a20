/**
 * The parts of the README generated from the code: the package layout (from
 * package-graph.json), each program's settings (from its zod schema) and each batch
 * job's data (from its schema). `npm run docs` writes them between their markers;
 * test/readme.test.ts fails when the README drifts from them.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { configMarkdownTable, fieldDocs, markdownCell, markdownDefault, programSchema } from "@tandem/common";
import { BATCH_PROGRAM, JOB_KINDS, JOB_SCHEMAS } from "@tandem/batch-worker";
import { WORKER_PROGRAM } from "@tandem/cloud-worker";
import { CONTROL_PROGRAM } from "@tandem/control-plane";
import { EDGE_PROGRAM } from "@tandem/edge-agent";

export const ROOT = join(import.meta.dirname, "..");
export const README = join(ROOT, "README.md");

interface PackageEntry {
  name: string;
  dir: string;
  what: string;
  dependsOn: string[];
}

function layoutTable(): string {
  const { packages } = JSON.parse(readFileSync(join(ROOT, "package-graph.json"), "utf8")) as {
    packages: PackageEntry[];
  };
  return [
    "| package | path | what | may import |",
    "|---|---|---|---|",
    ...packages.map(
      (p) =>
        `| \`@tandem/${p.name}\` | \`${p.dir}/\` | ${p.what} | ${p.dependsOn.map((d) => `\`${d}\``).join(", ") || "—"} |`,
    ),
  ].join("\n");
}

function jobsTable(): string {
  const rows = JOB_KINDS.flatMap((kind) =>
    fieldDocs(JOB_SCHEMAS[kind]).map(
      (doc) =>
        `| \`${kind}\` | \`${doc.key}${doc.kind === "list" ? "[]" : ""}\` | ${markdownDefault(doc.default)} | ${doc.values} | ${markdownCell(doc.description)} |`,
    ),
  );
  return ["| kind | field | default | values | meaning |", "|---|---|---|---|---|", ...rows].join("\n");
}

/** Marker name → generated Markdown. */
export function generatedSections(): Record<string, string> {
  const programs = [EDGE_PROGRAM, WORKER_PROGRAM, CONTROL_PROGRAM, BATCH_PROGRAM];
  return {
    layout: layoutTable(),
    ...Object.fromEntries(
      programs.map((program) => [
        `settings ${program.name}`,
        configMarkdownTable(programSchema(program), program.envPrefix),
      ]),
    ),
    jobs: jobsTable(),
  };
}

const BEGIN = (name: string) => `<!-- generated: ${name} (npm run docs) -->`;
const END = "<!-- end generated -->";

/** The README with every generated section replaced by what the code says now. */
export function regenerate(readme: string): { text: string; missing: string[] } {
  let text = readme;
  const missing: string[] = [];
  for (const [name, body] of Object.entries(generatedSections())) {
    const begin = text.indexOf(BEGIN(name));
    const end = begin < 0 ? -1 : text.indexOf(END, begin);
    if (begin < 0 || end < 0) {
      missing.push(name);
      continue;
    }
    text = `${text.slice(0, begin)}${BEGIN(name)}\n${body}\n${text.slice(end)}`;
  }
  return { text, missing };
}
