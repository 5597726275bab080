#!/usr/bin/env python3
"""A minimal CRI v1 client, so the Rust integration tests can drive containerd's CRI plugin the
way kubelet does (crictl is not packaged for Debian 12).

    cri.py --socket SOCK --stubs DIR METHOD [REQUEST_JSON]

calls RuntimeService.METHOD with METHOD+"Request" parsed from REQUEST_JSON (proto field names,
as in api.proto; default "{}") and prints the response as one JSON object on stdout, with every
field present (defaults included) and enums by name. `bytes` fields of the response (ExecSync's
stdout/stderr) are printed as UTF-8 text instead of base64. On an RPC error it prints
"METHOD: CODE: details" on stderr and exits 1.

The gRPC stubs are generated from api.proto beside this file with grpcio-tools into
DIR/<hash of api.proto>, once, atomically (tests may run concurrently); the venv made by
scripts/setup has grpcio and grpcio-tools.
"""

import argparse
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "api.proto")
# containerd answers this until its CRI plugin has finished initialising; nothing was done yet,
# so retrying is safe for any call. UNAVAILABLE means the connection itself failed.
NOT_READY = "server is not initialized yet"
READY_TIMEOUT_S = 30
CALL_TIMEOUT_S = 120


def load_stubs(stubs_root):
    with open(PROTO, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    target = os.path.join(stubs_root, digest)
    if not os.path.isfile(os.path.join(target, "api_pb2_grpc.py")):
        os.makedirs(stubs_root, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=stubs_root, prefix=".gen-")
        from grpc_tools import protoc

        rc = protoc.main(["protoc", "-I" + HERE, "--python_out=" + tmp,
                          "--grpc_python_out=" + tmp, PROTO])
        if rc != 0:
            sys.exit(f"cri.py: protoc failed on {PROTO} (exit {rc})")
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process generated the same stubs first.
            shutil.rmtree(tmp, ignore_errors=True)
    sys.path.insert(0, target)
    return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")


def to_json(message):
    from google.protobuf import json_format

    out = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)
    for field in message.DESCRIPTOR.fields:
        if field.type == field.TYPE_BYTES:
            out[field.name] = getattr(message, field.name).decode("utf-8", "replace")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="containerd's gRPC unix socket")
    parser.add_argument("--stubs", required=True, help="directory for the generated stubs")
    parser.add_argument("method", help="RuntimeService method, e.g. RunPodSandbox")
    parser.add_argument("request", nargs="?", default="{}", help="request as JSON")
    args = parser.parse_args()

    pb2, pb2_grpc = load_stubs(args.stubs)
    import grpc
    from google.protobuf import json_format

    request_type = getattr(pb2, args.method + "Request", None)
    if request_type is None:
        sys.exit(f"cri.py: {args.method} is not a RuntimeService call in {PROTO}")
    request = json_format.ParseDict(json.loads(args.request), request_type())
    channel = grpc.insecure_channel("unix://" + args.socket)
    call = getattr(pb2_grpc.RuntimeServiceStub(channel), args.method)

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            response = call(request, timeout=CALL_TIMEOUT_S)
            break
        except grpc.RpcError as err:
            retry = err.code() == grpc.StatusCode.UNAVAILABLE or NOT_READY in (err.details() or "")
            if retry and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            print(f"{args.method}: {err.code().name}: {err.details()}", file=sys.stderr)
            sys.exit(1)
    json.dump(to_json(response), sys.stdout)
    print()


if __name__ == "__main__":
    main()
