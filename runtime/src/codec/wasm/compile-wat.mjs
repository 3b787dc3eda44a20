/**
 * The .wat → .wasm step shared by generate-codec-wasm.mjs and its up-to-date test:
 * wabt's wat2wasm with SIMD, no names section (the binary is the same whatever the
 * labels), so a byte comparison sees only changes of code.
 */
import initWabt from "wabt";

/** The binary of WebAssembly text `source`. */
export async function compileWat(source) {
  const wabt = await initWabt();
  const module = wabt.parseWat("codec-kernels.wat", source, { simd: true });
  try {
    module.validate();
    return module.toBinary({ write_debug_names: false }).buffer;
  } finally {
    module.destroy();
  }
}
