/**
 * The environment a benchmark's child process runs in: the deployed one. The image and
 * the edge's systemd unit set HUGE_PAGES_ENV, so a figure measured without it would not
 * be what a deployment gets. Any tunables already set are kept.
 */
import { HUGE_PAGES_ENV } from "@tandem/runtime";

export function deployedEnvironment(): NodeJS.ProcessEnv {
  const { name, value } = HUGE_PAGES_ENV;
  const tunables = process.env[name];
  return { ...process.env, [name]: tunables ? `${tunables}:${value}` : value };
}
