// What a server's bundle (scripts/bundle-programs.mjs) still loads from node_modules at
// run time: written once, for the bundler and for whatever installs a bundle
// (edge-agent/install/copy-agent-files.mjs).

/**
 * Left outside the bundle: packages that read their own files by path — onnxruntime-node
 * its native addon, @grpc/reflection and @grpc/proto-loader .proto files (after SERVING).
 */
export const BUNDLE_EXTERNALS = ["onnxruntime-node", "@grpc/reflection", "@grpc/proto-loader"];

/**
 * Inside the bundle's code but loaded by name when used, so needed on disk too: protobufjs,
 * which the ONNX graph writer requires only to write a graph.
 */
export const LOADED_BY_NAME = ["protobufjs"];
