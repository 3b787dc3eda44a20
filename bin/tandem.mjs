#!/usr/bin/env node
// The `tandem` command. Sources are TypeScript run through tsx, so the repository needs
// no build step; tsx is resolved from this file's location, not the working directory.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
