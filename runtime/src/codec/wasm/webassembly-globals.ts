/**
 * The part of the WebAssembly JavaScript API that the codec kernels use. Node has the
 * global at run time, but its types live in TypeScript's DOM library, which this Node
 * project does not load (it would declare browser globals that do not exist here).
 */
declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace -- the global WebAssembly is a namespace: declaring its members takes one
  namespace WebAssembly {
    class Module {
      constructor(bytes: Uint8Array);
    }
    class Instance {
      constructor(module: Module, imports?: Record<string, Record<string, unknown>>);
      readonly exports: Record<string, unknown>;
    }
    class Memory {
      readonly buffer: ArrayBuffer;
      /** Adds `pages` pages of 64 KiB; the previous `buffer` is detached. */
      grow(pages: number): number;
    }
  }
}

export {};
