/** `tandem api-key`: a new API key for an edge's public API, and the hash its config holds. */
import { z } from "zod";
import { hashApiKey, newApiKey } from "@tandem/proto";
import type { CommandDefinition } from "../command.ts";

const API_KEY_OPTIONS = z.object({}).strict();

export const apiKeyCommand: CommandDefinition<typeof API_KEY_OPTIONS> = {
  name: "api-key",
  summary: "make an API key for an edge's public API",
  description:
    'Prints {"key", "sha256"}: give the key to the client (`authorization: Bearer KEY`), put the sha256 in the edge\'s apiKeys.',
  options: API_KEY_OPTIONS,
  async run() {
    const key = newApiKey();
    console.log(JSON.stringify({ key, sha256: hashApiKey(key) }));
    return 0;
  },
};
