/**
 * The edge agent installs on a device as one service: the installer copies what the agent
 * needs, writes its config and systemd unit, and the installed agent starts and answers.
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { generate, listServices, startProgram, until } from "@tandem/testkit";

const ROOT = join(import.meta.dirname, "..");
const dir = mkdtempSync(join(tmpdir(), "tandem-install-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("edge-agent/install/install.sh", () => {
  it("installs the agent, its model, config and unit, and the installed agent serves Generate", async () => {
    const prefix = join(dir, "opt");
    const env = {
      ...process.env,
      TANDEM_ETC_DIR: join(dir, "etc"),
      TANDEM_SYSTEMD_DIR: join(dir, "systemd"),
      TANDEM_CACHE_DIR: join(dir, "cache"),
    };
    const { stdout } = await promisify(execFile)(
      "bash",
      [join(ROOT, "edge-agent/install/install.sh"), "--prefix", prefix, "--user", "root"],
      { env },
    );
    expect(stdout).toMatch(/tandem-edge installed/);
    const config = JSON.parse(readFileSync(join(dir, "etc", "edge.json"), "utf8")) as {
      model: string;
      calibration: string;
    };
    expect(config.model).toBe(join(prefix, "models", "tandem-demo"));
    expect(existsSync(config.calibration)).toBe(true);
    const unit = readFileSync(join(dir, "systemd", "tandem-edge.service"), "utf8");
    // node wherever it is installed, and the sandboxing a service on a device should have.
    const node = execFileSync("sh", ["-c", "command -v node"], { encoding: "utf8" }).trim();
    expect(unit).toContain(
      `ExecStart=${node} ${prefix}/bin/tandem-edge.mjs --config ${join(dir, "etc")}/edge.json`,
    );
    for (const setting of [
      "ProtectKernelTunables=true",
      "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
      "PrivateDevices=true",
      "MemoryMax=",
    ])
      expect(unit).toContain(setting);
    // systemd itself accepts the unit as written (where systemd is installed).
    const analyze = "/usr/bin/systemd-analyze";
    if (existsSync(analyze))
      await promisify(execFile)(analyze, ["verify", join(dir, "systemd", "tandem-edge.service")]);
    expect(existsSync(join(prefix, "services"))).toBe(false); // the device gets the edge, not the cloud
    // The agent's bundle and the packages it loads, not the checkout's node_modules: no dev
    // tools, onnxruntime-node's binaries for this platform only, ~85 MB with the demo model.
    expect(existsSync(join(prefix, "edge-agent", "dist", "bundle", "program.mjs"))).toBe(true);
    for (const devTool of ["vitest", "typescript", "esbuild", "eslint"])
      expect(existsSync(join(prefix, "node_modules", devTool))).toBe(false);
    const binaries = readdirSync(join(prefix, "node_modules", "onnxruntime-node", "bin", "napi-v6"));
    expect(binaries).toEqual([process.platform]);
    const installedMb = Number(execFileSync("du", ["-sm", prefix], { encoding: "utf8" }).split("\t")[0]);
    expect(installedMb).toBeLessThan(150);

    // Run the installed copy, as the unit would.
    const agent = await startProgram(
      "tandem-edge",
      { config: join(dir, "etc", "edge.json"), port: 0, httpAddress: "127.0.0.1:0" },
      { TANDEM_CACHE_DIR: join(dir, "cache") },
      { binDir: join(prefix, "bin") },
    );
    try {
      const result = await generate(agent.address, { text: "The", maxTokens: 5, mode: "MODE_EDGE_ONLY" });
      expect(result.error).toBeUndefined();
      expect(result.tokens).toHaveLength(5);
      // Server reflection, which loads its packages from the install's node_modules, answers.
      let services: string[] = [];
      await until("reflection to answer", async () => {
        services = await listServices(agent.address).catch(() => []);
        return services.length > 0;
      });
      expect(services).toEqual(["tandem.v1.Inference"]);
    } finally {
      await agent.kill();
    }
  });

  // Needs a home directory under /home or /root to put a node in, as nvm does.
  it.skipIf(!/^\/(home|root)\//.test(`${homedir()}/`))(
    "refuses a node in a home directory, which the unit's ProtectHome=true hides, unless --node names it",
    async () => {
      const home = mkdtempSync(join(homedir(), ".tandem-install-node-"));
      try {
        symlinkSync(process.execPath, join(home, "node"));
        const env = {
          ...process.env,
          PATH: `${home}:${process.env.PATH}`,
          TANDEM_ETC_DIR: join(dir, "home-node", "etc"),
          TANDEM_SYSTEMD_DIR: join(dir, "home-node", "systemd"),
          TANDEM_CACHE_DIR: join(dir, "home-node", "cache"),
        };
        const install = (...args: string[]) =>
          promisify(execFile)("bash", [join(ROOT, "edge-agent/install/install.sh"), ...args], { env }).then(
            () => ({ code: 0, stderr: "" }),
            (error: { code: number; stderr: string }) => error,
          );
        const refused = await install("--prefix", join(dir, "refused"));
        expect(refused.code).toBe(1);
        expect(refused.stderr).toContain(`node is ${home}/node (in a home directory)`);
        expect(refused.stderr).toMatch(/ProtectHome=true[\s\S]*system-wide[\s\S]*--node PATH/);
        // Refused before anything is copied or written.
        expect(existsSync(join(dir, "refused"))).toBe(false);
        expect(existsSync(join(dir, "home-node"))).toBe(false);
        // Named with --node, it is taken as given: the installer goes on (here to a model it lacks).
        const named = await install(
          ...["--prefix", join(dir, "named"), "--node", join(home, "node")],
          ...["--model", join(dir, "no-model")],
        );
        expect(named.code).toBe(1);
        expect(named.stderr).toMatch(/--model .*no-model has no config\.json/);
        const missing = await install("--node", join(home, "no-node"));
        expect(missing.code).toBe(2);
        expect(missing.stderr).toMatch(/--node .*no-node is not an executable/);
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    },
  );
});
