/** `npm run docs`: rewrites the README's generated sections from the code (see readme-sections.ts). */
import { readFileSync, writeFileSync } from "node:fs";
import { README, regenerate } from "./readme-sections.ts";

const { text, missing } = regenerate(readFileSync(README, "utf8"));
if (missing.length > 0) {
  process.stderr.write(`README.md lacks the markers of: ${missing.join(", ")}\n`);
  process.exit(1);
}
writeFileSync(README, text);
