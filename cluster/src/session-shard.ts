/**
 * Which virtual KV shard a session lives in: the one hash every part of Tandem (control
 * plane, workers, edge agents) agrees on.
 */

/** 32-bit FNV-1a followed by a murmur3 finaliser: fast, well mixed, stable across runs. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The virtual shard a session's KV lives in. */
export function sessionShard(sessionId: string, shardCount: number): number {
  return hash32(`session:${sessionId}`) % shardCount;
}
