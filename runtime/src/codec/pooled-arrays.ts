/**
 * The arrays codecs return, carved from shared slabs. A fresh typed array above V8's
 * in-heap limit (64 bytes) is allocated and zeroed outside the heap and tracked for the
 * collector: 2.7 µs for a 1152-byte int4 payload and 4.3 µs for the 8 KiB of a decoded
 * 2048-value token on the reference machine, more than the coding itself. Carving views
 * from a 256 KiB slab costs ~0.7 µs a token amortized, as Node's Buffer pool does for
 * small buffers.
 *
 * The views are fresh memory, zeroed like a new array, never reused. The price: a view
 * kept alive keeps its whole slab alive. Codec outputs are transient (a payload goes on
 * the wire, a decoded state into the segment's input), so slabs die together; arrays
 * larger than MAX_POOLED_BYTES get their own buffer. Callers must honour byteOffset.
 */

const SLAB_BYTES = 256 * 1024;
/** Larger arrays are allocated on their own: a slab would hold few of them. */
const MAX_POOLED_BYTES = 16 * 1024;

let slab = new ArrayBuffer(0);
let slabOffset = 0;

function carve(bytes: number): number {
  // 16-byte alignment: any typed array, and SIMD-friendly copies.
  const aligned = (bytes + 15) & ~15;
  if (slabOffset + aligned > slab.byteLength) {
    slab = new ArrayBuffer(SLAB_BYTES);
    slabOffset = 0;
  }
  const at = slabOffset;
  slabOffset += aligned;
  return at;
}

/** A zeroed Float32Array of `length`, from a slab when small. */
export function pooledFloat32Array(length: number): Float32Array {
  if (4 * length > MAX_POOLED_BYTES) return new Float32Array(length);
  const at = carve(4 * length);
  return new Float32Array(slab, at, length);
}

/** A zeroed Uint8Array of `length`, from a slab when small. */
export function pooledUint8Array(length: number): Uint8Array {
  if (length > MAX_POOLED_BYTES) return new Uint8Array(length);
  const at = carve(length);
  return new Uint8Array(slab, at, length);
}
