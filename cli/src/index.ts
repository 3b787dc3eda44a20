/** @tandem/cli: the `tandem` command. Commands load on demand, so `tandem --help` loads nothing else. */
export { main } from "./main.ts";
