/**
 * gRPC service definitions and client constructors built from a protobufjs descriptor,
 * converting messages exactly as @grpc/proto-loader does with the options given: the
 * generated types (proto-loader-gen-types) describe what these produce.
 *
 * Why not proto-loader itself: it parses the .proto files and builds a file descriptor of
 * every message at start, ~60 ms of a server's ~300 ms start on Node 20, for reflection
 * alone. Servers load reflection after they report SERVING instead (tandem-protos.ts).
 */
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs/light.js";

/** How decoded messages look: @grpc/proto-loader's options of the same names. */
export interface MessageConversion {
  longs: typeof String | typeof Number;
  enums: typeof String;
  defaults: boolean;
  oneofs: boolean;
}

/** One method as grpc-js takes it (proto-loader's MethodDefinition without the descriptors). */
export type GrpcMethod<Definition> = Omit<Definition, "requestType" | "responseType" | "options">;

/** A service as grpc-js takes it, typed by a generated `...Definition` interface. */
export type GrpcService<Definition> = { [Method in keyof Definition]: GrpcMethod<Definition[Method]> };

/** A client constructor for a service, with its definition attached (as loadPackageDefinition gives). */
export type GrpcClientConstructor<Client, Definition> = (new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
) => Client) & { service: GrpcService<Definition>; serviceName: string };

function serializerOf(type: protobuf.Type): (value: object) => Buffer {
  return (value) => {
    if (Array.isArray(value))
      throw new TypeError(`cannot serialize an array as ${type.fullName.slice(1)}: expected an object`);
    // Under Node, protobufjs's writer already finishes into a Buffer: no copy of the bytes.
    return type.encode(type.fromObject(value)).finish() as Buffer;
  };
}

function deserializerOf(type: protobuf.Type, conversion: MessageConversion): (bytes: Buffer) => object {
  return (bytes) => type.toObject(type.decode(bytes), conversion);
}

/**
 * A decoder of the message type `name` (e.g. `tandem.v1.EdgeMessage`) in `root`, converting
 * exactly as the services' deserializers do: for handlers that take their requests as
 * bytes (withUndecodedRequests) and decode them themselves.
 */
export function messageDecoderOf(
  root: protobuf.Root,
  name: string,
  conversion: MessageConversion,
): (bytes: Buffer) => object {
  return deserializerOf(root.lookupType(name), conversion);
}

const asBytes = (bytes: Buffer) => bytes;

/**
 * `definition` as a server registers it when its handlers decode requests themselves: each
 * handler gets the bytes that came. grpc-js answers bytes a request deserializer throws on
 * with INTERNAL ("Error deserializing request") before any handler sees the call, telling
 * the server nothing; malformed bytes are the caller's fault, and a handler can answer,
 * count and log them as such. Clients and responses are unchanged.
 */
export function withUndecodedRequests(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const undecoded: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(definition))
    undecoded[name] = { ...method, requestDeserialize: asBytes };
  return undecoded;
}

/** The service definition of `service` (e.g. `tandem.v1.Inference`) in `root`. */
export function serviceDefinitionOf(
  root: protobuf.Root,
  service: string,
  conversion: MessageConversion,
): grpc.ServiceDefinition {
  const resolved = root.lookupService(service);
  resolved.resolveAll();
  const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const method of resolved.methodsArray) {
    const request = method.resolvedRequestType!;
    const response = method.resolvedResponseType!;
    definition[method.name] = {
      path: `/${service}/${method.name}`,
      requestStream: Boolean(method.requestStream),
      responseStream: Boolean(method.responseStream),
      requestSerialize: serializerOf(request),
      requestDeserialize: deserializerOf(request, conversion),
      responseSerialize: serializerOf(response),
      responseDeserialize: deserializerOf(response, conversion),
      // Method names are PascalCase: handlers and client methods also answer to camelCase.
      originalName: method.name[0]!.toLowerCase() + method.name.slice(1),
    };
  }
  return definition;
}

/** A client constructor for `service` in `root`, its definition attached as `.service`. */
export function clientConstructorOf<Client, Definition>(
  root: protobuf.Root,
  service: string,
  conversion: MessageConversion,
): GrpcClientConstructor<Client, Definition> {
  const definition = serviceDefinitionOf(root, service, conversion);
  return grpc.makeGenericClientConstructor(definition, service) as unknown as GrpcClientConstructor<
    Client,
    Definition
  >;
}

/**
 * A protobufjs root of a JSON descriptor as `Root.toJSON` writes it (light build: no
 * .proto parser is loaded). protobufjs's INamespace type is stricter than its own output
 * (it requires a `comment` on every method, and has no map fields), hence `object`.
 */
export function rootOf(descriptor: object): protobuf.Root {
  return protobuf.Root.fromJSON(descriptor as protobuf.INamespace);
}
