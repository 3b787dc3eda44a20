/**
 * The program of one expert thread (expert-threads.ts): it holds the ONNX Runtime sessions
 * of the experts it was told to load and runs them. It has no policy of its own (which
 * expert to load, which to drop, where a run goes): the main thread decides, and this
 * thread works through its commands in the order they came.
 */
import { parentPort } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import { GRAPH_IO } from "../graph/graph-io-names.ts";
import { createExpertSession } from "./expert-session.ts";
import type { ExpertHostCommand, ExpertHostReply } from "./expert-threads.ts";

const port = parentPort;
if (!port) throw new Error("expert-host-worker runs as a worker thread");

const sessions = new Map<string, ort.InferenceSession>();
/** Why an expert's last load failed, for the runs sent after it. */
const loadFailures = new Map<string, string>();
/** Commands run one at a time: a run must not see a session a drop released under it. */
let tail: Promise<void> = Promise.resolve();

port.on("message", (command: ExpertHostCommand) => {
  tail = tail.then(() => execute(command));
});

async function execute(command: ExpertHostCommand): Promise<void> {
  try {
    switch (command.kind) {
      case "load": {
        loadFailures.delete(command.key);
        if (!sessions.has(command.key)) {
          try {
            sessions.set(command.key, await createExpertSession(command.path, command.threads));
          } catch (error) {
            loadFailures.set(command.key, error instanceof Error ? error.message : String(error));
            throw error;
          }
        }
        reply({ id: command.id, kind: "done" });
        return;
      }
      case "run": {
        const session = sessions.get(command.key);
        if (!session) {
          const failure = loadFailures.get(command.key);
          throw new Error(
            failure
              ? `expert ${command.key} (layer:expert) could not be loaded: ${failure}`
              : `expert ${command.key} (layer:expert) is not loaded in this thread`,
          );
        }
        const results = await session.run({
          [GRAPH_IO.expertIn]: new ort.Tensor("float32", command.input, [command.rows, command.hidden]),
        });
        // A copy: ONNX Runtime's output buffer is not ours to hand to another thread.
        const output = Float32Array.from(results[GRAPH_IO.expertOut].data as Float32Array);
        reply({ id: command.id, kind: "output", output }, [output.buffer]);
        return;
      }
      case "drop": {
        const session = sessions.get(command.key);
        sessions.delete(command.key);
        await session?.release();
        reply({ id: command.id, kind: "done" });
        return;
      }
      case "release": {
        const all = [...sessions.values()];
        sessions.clear();
        await Promise.all(all.map((s) => s.release()));
        reply({ id: command.id, kind: "done" });
        return;
      }
    }
  } catch (error) {
    reply({
      id: command.id,
      kind: "error",
      message: error instanceof Error ? error.message : String(error),
    });
  }
}

function reply(message: ExpertHostReply, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(message, transfer);
}
