"""A Python client of Tandem's public API, generated from proto/ with grpcio-tools.

    /usr/bin/python3 test/python/generate_client.py HOST:PORT "prompt text" MAX_TOKENS

Prints one JSON object: the tokens (id, text, source) and the summary.
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def load_stubs():
    out = tempfile.mkdtemp(prefix="tandem-py-")
    status = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}", "tandem/v1/inference.proto"])
    if status != 0:
        raise SystemExit(f"protoc failed with {status}")
    sys.path.insert(0, out)
    from tandem.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402

    return inference_pb2, inference_pb2_grpc


def main():
    address, prompt, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pb, pb_grpc = load_stubs()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        tokens, summary = [], None
        for event in stub.Generate(pb.GenerateRequest(text=prompt, max_tokens=max_tokens), timeout=60):
            if event.HasField("token"):
                tokens.append({"id": event.token.id, "text": event.token.text, "source": pb.TokenSource.Name(event.token.source)})
            elif event.HasField("summary"):
                summary = {"edge_tokens": event.summary.edge_tokens, "cloud_tokens": event.summary.cloud_tokens, "finish_reason": pb.FinishReason.Name(event.summary.finish_reason)}
        try:
            stub.Generate(pb.GenerateRequest(text=prompt, max_tokens=10**6), timeout=10).next()
            invalid = None
        except grpc.RpcError as error:
            invalid = {"code": error.code().name, "details": error.details()}
    print(json.dumps({"tokens": tokens, "summary": summary, "invalid": invalid}))


if __name__ == "__main__":
    main()
