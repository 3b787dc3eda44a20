/** An expert's name in the stores' maps and messages: `layer:expert`. */
export function expertKey(layer: number, expert: number): string {
  return `${layer}:${expert}`;
}

/** `layer:expert` → layer. */
export function layerOfKey(key: string): number {
  return Number(key.slice(0, key.indexOf(":")));
}

/** `layer:expert` keys → [layer, expert] pairs, in the same order. */
export function expertPairs(keys: Iterable<string>): [number, number][] {
  return [...keys].map((key) => key.split(":").map(Number) as [number, number]);
}
