/** Parsing helpers for command options that give errors naming the option. */
import { UsageError } from "@tandem/common";

export function parseIntegerOption(
  option: string,
  value: string | undefined,
  fallback: number,
  min = 0,
): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min)
    throw new UsageError(option, `must be an integer ≥ ${min}, got "${value}"`);
  return parsed;
}

export function parseNumberOption(option: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed)) throw new UsageError(option, `must be a number, got "${value}"`);
  return parsed;
}

export function parseIntegerList(option: string, value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const items = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return items.map((item) => {
    const parsed = Number(item);
    if (!Number.isInteger(parsed))
      throw new UsageError(option, `must be a comma-separated list of integers, got "${value}"`);
    return parsed;
  });
}

export function requireOption(option: string, value: string | undefined): string {
  if (value === undefined || value === "") throw new UsageError(option, "is required");
  return value;
}
