// @ts-check
/**
 * The dependency check (part of `npm test`): rules generated from package-graph.json.
 *  - a package imports another only if the table allows it, and only through its entry
 *    points (src/index.ts, and any subpath its package.json exports);
 *  - tests beside a package's code may reach that package's internals (and testkit),
 *    nothing else's; integration tests in test/ see only public entry points;
 *  - no import cycles.
 */
const { existsSync, readFileSync } = require("node:fs");
const { join } = require("node:path");

const { packages } = JSON.parse(readFileSync(join(__dirname, "package-graph.json"), "utf8"));
const escapeRegex = (/** @type {string} */ s) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
const anyPackage = `^(${packages.map((/** @type {any} */ p) => escapeRegex(p.dir)).join("|")})/`;
/** A package's public entry points: the source files its package.json exports (src/index.ts without one). */
const entries = (/** @type {string} */ dir) => {
  const manifest = join(__dirname, dir, "package.json");
  const exported = existsSync(manifest)
    ? Object.values(JSON.parse(readFileSync(manifest, "utf8")).exports).map((/** @type {any} */ target) =>
        join(dir, target.development),
      )
    : [join(dir, "src/index.ts")];
  return exported.map((file) => `^${escapeRegex(file)}$`);
};

/** @type {import("dependency-cruiser").IForbiddenRuleType[]} */
const forbidden = [
  {
    name: "no-circular",
    severity: "error",
    comment: "Import cycles (type-only imports aside) make load order and ownership unclear.",
    from: {},
    to: { circular: true, viaOnly: { dependencyTypesNot: ["type-only"] } },
  },
  {
    name: "no-unresolvable",
    severity: "error",
    comment: "An import the check cannot resolve is an import it cannot check.",
    from: {},
    to: { couldNotResolve: true },
  },
  {
    name: "integration-tests-use-entry-points",
    severity: "error",
    comment: "test/ and scripts/ see packages as their users do: through their entry points only.",
    from: { path: "^(test|scripts)/" },
    to: { path: anyPackage, pathNot: packages.flatMap((/** @type {any} */ p) => entries(p.dir)) },
  },
];
for (const p of packages) {
  const allowed = [p.name, ...p.dependsOn];
  const others = packages.filter((/** @type {any} */ q) => q.name !== p.name);
  const notAllowed = others.filter((/** @type {any} */ q) => !allowed.includes(q.name));
  if (notAllowed.length > 0)
    forbidden.push({
      name: `${p.name}-depends-only-on-${p.dependsOn.join("-") || "nothing"}`,
      severity: "error",
      comment: `package-graph.json lets ${p.name} depend on: ${p.dependsOn.join(", ") || "no other package"}.`,
      from: { path: `^${escapeRegex(p.dir)}/`, pathNot: ["\\.test\\.ts$"] },
      to: { path: `^(${notAllowed.map((/** @type {any} */ q) => escapeRegex(q.dir)).join("|")})/` },
    });
  forbidden.push({
    name: `${p.name}-tests-depend-only-on-${[...p.dependsOn, "testkit"].join("-")}`,
    severity: "error",
    comment: `Tests of ${p.name} may use what ${p.name} may, and testkit.`,
    from: { path: `^${escapeRegex(p.dir)}/.*\\.test\\.ts$` },
    to: {
      path: `^(${notAllowed
        .filter((/** @type {any} */ q) => q.name !== "testkit")
        .map((/** @type {any} */ q) => escapeRegex(q.dir))
        .join("|")})/`,
    },
  });
  forbidden.push({
    name: `${p.name}-imports-others-through-their-index`,
    severity: "error",
    comment: "Another package is reached only through its entry points, never its internals.",
    from: { path: `^${escapeRegex(p.dir)}/` },
    to: {
      path: anyPackage,
      pathNot: [`^${escapeRegex(p.dir)}/`, ...others.flatMap((/** @type {any} */ q) => entries(q.dir))],
    },
  });
}
// A filter with nothing to match (a package with no forbidden neighbours) would forbid everything.
const rules = forbidden.filter((rule) => !(rule.to.path === "^()/"));

/** @type {import("dependency-cruiser").IConfiguration} */
module.exports = {
  forbidden: rules,
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: ["(^|/)dist/", "^\\.scratch/", "^tools/", "^models/", "^charts/"] },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["development", "import", "default"],
      extensions: [".ts", ".js", ".mjs", ".cjs", ".json"],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
