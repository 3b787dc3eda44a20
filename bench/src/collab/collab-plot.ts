/**
 * The collab benchmark's plot (a PNG drawn with @napi-rs/canvas, written to
 * bench/results/collab.png by full runs): escalated share, cloud compute and agreement per
 * calibrated target beside per-token latency over the emulated link, so the trade-off
 * reads at a glance.
 */
import { createPlotCanvas, writePng } from "../plot-canvas.ts";
import { LINK } from "./collab-context.ts";

/**
 * Draws the sweep (left panel) and the latencies (right panel) into a PNG at `path`;
 * resolves with whether it did (see createPlotCanvas).
 */
export async function plotCollab(
  sweep: { target: number; escalated_share: number; agreement: number }[],
  compute: { target: number; cloud_compute_relative: number }[],
  latency: Record<string, { p50: number; p95: number }>,
  deployment: string,
  path: string,
): Promise<boolean> {
  const canvas = await createPlotCanvas(1100, 460);
  if (!canvas) return false;
  const g = canvas.getContext("2d");
  g.font = "14px sans-serif";
  // Panel 1: escalation share and cloud compute vs agreement target.
  const left = 70;
  const top = 50;
  const w = 420;
  const h = 330;
  g.strokeStyle = "#888";
  g.strokeRect(left, top, w, h);
  g.fillStyle = "#222";
  g.fillText(`${deployment}; per calibrated agreement target:`, left - 40, top - 30);
  g.fillText(
    "escalated share (blue), cloud compute ÷ cloud-only (red), agreement (green)",
    left - 40,
    top - 12,
  );
  const x = (i: number) => left + ((i + 0.5) / sweep.length) * w;
  const y = (v: number) => top + (1 - v) * h;
  const series: [string, number[]][] = [
    ["#1f77b4", sweep.map((s) => s.escalated_share)],
    ["#d62728", sweep.map((s) => compute.find((c) => c.target === s.target)?.cloud_compute_relative ?? 0)],
    ["#2ca02c", sweep.map((s) => s.agreement)],
  ];
  for (const [color, values] of series) {
    g.strokeStyle = color;
    g.fillStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    values.forEach((v, i) => (i === 0 ? g.moveTo(x(i), y(v)) : g.lineTo(x(i), y(v))));
    g.stroke();
    values.forEach((v, i) => g.fillRect(x(i) - 3, y(v) - 3, 6, 6));
  }
  g.fillStyle = "#222";
  sweep.forEach((s, i) => g.fillText(String(s.target), x(i) - 14, top + h + 18));
  for (let t = 0; t <= 4; t++) g.fillText((t / 4).toFixed(2), left - 40, y(t / 4) + 4);
  g.fillText("agreement target", left + w / 2 - 50, top + h + 38);
  // Panel 2: per-token latency over the emulated link.
  const left2 = 620;
  const entries = Object.entries(latency);
  const max = Math.max(...entries.map(([, v]) => v.p95), 1);
  g.strokeStyle = "#888";
  g.strokeRect(left2, top, 420, h);
  g.fillText(
    `per-token latency, ms (${LINK.oneWayDelayMs} ms each way, ${LINK.rateMbit} Mbit/s)`,
    left2,
    top - 20,
  );
  entries.forEach(([name, v], i) => {
    const bx = left2 + 30 + i * 130;
    g.fillStyle = "#1f77b4";
    g.fillRect(bx, top + h - (v.p50 / max) * (h - 20), 45, (v.p50 / max) * (h - 20));
    g.fillStyle = "#ff7f0e";
    g.fillRect(bx + 50, top + h - (v.p95 / max) * (h - 20), 45, (v.p95 / max) * (h - 20));
    g.fillStyle = "#222";
    g.fillText(name, bx, top + h + 18);
    g.fillText(`${v.p50.toFixed(1)} / ${v.p95.toFixed(1)}`, bx, top + h + 36);
  });
  g.fillText("p50 (blue) / p95 (orange)", left2 + 130, top + h + 56);
  writePng(canvas, path);
  return true;
}
