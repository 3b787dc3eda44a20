/**
 * The canvas the benchmarks' plots are drawn on (@napi-rs/canvas). A development
 * dependency, loaded only by a full run that plots: the production image (npm ci
 * --omit=dev) does not carry its 35 MB native binary, and a full benchmark run there
 * prints its JSON and says the plot was skipped.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Canvas } from "@napi-rs/canvas";

/** A white canvas, or undefined (with a line on stderr) where the package is not installed. */
export async function createPlotCanvas(width: number, height: number): Promise<Canvas | undefined> {
  let canvasModule: typeof import("@napi-rs/canvas");
  try {
    canvasModule = await import("@napi-rs/canvas");
  } catch {
    process.stderr.write("plot skipped: @napi-rs/canvas (a development dependency) is not installed\n");
    return undefined;
  }
  const canvas = canvasModule.createCanvas(width, height);
  const g = canvas.getContext("2d");
  g.fillStyle = "white";
  g.fillRect(0, 0, width, height);
  return canvas;
}

export function writePng(canvas: Canvas, path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, canvas.toBuffer("image/png"));
}
