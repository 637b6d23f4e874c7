"""The KServe V2 gRPC door: `inference.GRPCInferenceService` with the stubs tritonclient ships
(tritonclient.grpc.service_pb2_grpc), served by grpc's thread-pool server in each worker.
Protobuf is decoded and encoded in grpc's threads; the V2 models (service/operations/v2.py)
run in the worker's event loop, so gRPC requests share the batchers, limits and metrics with
HTTP. Each RPC goes through the same lifecycle as an HTTP request (service/lifecycle/calls.py).

Every worker binds the port with SO_REUSEPORT and the kernel spreads connections over them,
as BentoML spreads HTTP connections (docs/API.md, "gRPC and workers"). on_deployment checks first
that nothing else holds the port: SO_REUSEPORT would otherwise share it silently.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

from service.config import Settings
from service.errors import ApiError, BadInput
from service.lifecycle.auth import BearerAuth
from service.lifecycle.calls import Call, request_id, v2_endpoint
from service.lifecycle.drain import Drain
from service.operations import v2

log = logging.getLogger("vae.grpc")
# typed contents field per datatype (when a client does not send raw_input_contents)
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
            "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
            "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
            "FP32": "fp32_contents", "FP64": "fp64_contents"}


def decode_inputs(request: pb.ModelInferRequest) -> list[v2.Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadInput(f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} "
                       "inputs; give one per input or use typed contents")
    tensors = []
    for i, t in enumerate(request.inputs):
        shape = list(t.shape)
        if raw:
            data: Any = raw[i]
        elif t.datatype in CONTENTS:
            data = list(getattr(t.contents, CONTENTS[t.datatype]))
        else:
            data = []  # to_array names the unsupported datatype
        tensors.append(v2.Tensor(t.name, t.datatype, shape,
                                 v2.to_array(t.name, t.datatype, shape, data)))
    return tensors


def parameters(request: Any) -> dict[str, Any]:
    out = {}
    for key, p in request.parameters.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which else None
    return out


def rpc(path: Callable[[Any], str], admit: bool = False) -> Callable:
    """One RPC's lifecycle, as an HTTP request's: request ID (metadata x-request-id),
    authentication, admission, metrics, access log, and the error table's gRPC code. The
    handler runs in one of grpc's threads and gets the Call and the seconds left before the
    client's deadline (None: no deadline) for what it waits on in the event loop."""
    def deco(fn: Callable) -> Callable:
        def wrapper(self: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
            endpoint = path(request)
            metadata = dict(context.invocation_metadata() or ())
            svc = self.current()  # model calls start labelled with the default model
            model = svc.registry.default_name or "" if svc is not None and \
                endpoint.startswith("/v2/models/") else ""
            call = Call(v2_endpoint(endpoint) or "other", "grpc",
                        request_id(metadata.get("x-request-id")), type(request).__name__,
                        endpoint, self.access_log, model)
            code, kind, message = "OK", None, ""
            try:
                if self.auth is not None and not self.auth.allows(
                        endpoint, metadata.get("authorization")):
                    raise ApiError("authorization: a valid bearer token is required "
                                   "(metadata authorization: Bearer <token>)", "unauthorized")
                if admit:
                    call.admit()
                left = context.time_remaining()
                return fn(self, request, call, None if left is None or left > 1e6
                          else max(left, 0))
            except ApiError as exc:
                code, kind, message = exc.grpc_code, exc.kind, exc.message
            except TimeoutError:
                code, kind = "DEADLINE_EXCEEDED", "timeout"
                message = "the client's deadline passed before the answer"
            except Exception:
                code, kind = "INTERNAL", "internal"
                log.exception("gRPC %s failed", endpoint)
                raise  # grpc answers UNKNOWN, without the details
            finally:
                if code == "OK" and not context.is_active():
                    code, kind = "CANCELLED", "client_closed"  # the client went away
                call.finish(code, kind, peer=context.peer())
            context.abort(getattr(grpc.StatusCode, code), message)  # raises: ends the RPC
        return wrapper
    return deco


def _tensor_meta(specs: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=s["name"], datatype=s["datatype"],
                                                    shape=s["shape"]) for s in specs]


class Servicer(pbg.GRPCInferenceServiceServicer):
    """The V2 RPCs, run by grpc's synchronous server in its threads: per call it costs less
    than grpc.aio, whose completion-queue poller thread hands every event of every call to
    the event loop (docs/BENCHMARKS.md, P6). What must happen in the event loop (the
    operations, the repository) is handed to it; protobuf in and out stays here."""

    def __init__(self, current: Callable[[], Any], loop: asyncio.AbstractEventLoop,
                 access_log: bool = False, auth: Any = None):
        self.current = current  # -> the worker's service instance
        self.loop = loop  # the worker's event loop, where the batchers live
        self.auth = auth  # BearerAuth, or None
        self.access_log = access_log  # one JSON line per RPC, as for HTTP requests

    def _in_loop(self, work: Coroutine, timeout: float | None) -> Any:
        result = asyncio.run_coroutine_threadsafe(work, self.loop)
        try:
            return result.result(timeout)
        except TimeoutError:
            result.cancel()  # the batcher skips its rows if they have not run yet
            raise

    @rpc(lambda r: "/v2/health/live")
    def ServerLive(self, request: Any, call: Call, timeout: float | None) -> Any:
        return pb.ServerLiveResponse(live=True)

    @rpc(lambda r: "/v2/health/ready")
    def ServerReady(self, request: Any, call: Call, timeout: float | None) -> Any:
        return pb.ServerReadyResponse(ready=self.current().__is_ready__())

    @rpc(lambda r: f"/v2/models/{r.name}/ready")
    def ModelReady(self, request: Any, call: Call, timeout: float | None) -> Any:
        registry = self.current().registry
        call.relabel(v2.served_model(registry, request.name))
        ready = v2.model_ready(registry, request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @rpc(lambda r: "/v2")
    def ServerMetadata(self, request: Any, call: Call, timeout: float | None) -> Any:
        return pb.ServerMetadataResponse(**v2.server_metadata())

    @rpc(lambda r: f"/v2/models/{r.name}")
    def ModelMetadata(self, request: Any, call: Call, timeout: float | None) -> Any:
        svc = self.current()
        call.relabel(v2.served_model(svc.registry, request.name))
        md = v2.model_metadata(svc.ops, request.name, request.version)
        return pb.ModelMetadataResponse(
            name=md["name"], versions=md["versions"], platform=md["platform"],
            inputs=_tensor_meta(md["inputs"]), outputs=_tensor_meta(md["outputs"]))

    @rpc(lambda r: f"/v2/models/{r.model_name}/infer", admit=True)
    def ModelInfer(self, request: Any, call: Call, timeout: float | None) -> Any:
        svc = self.current()
        model, version = request.model_name, request.model_version
        try:
            rt = v2.resolve(svc.ops, model, version)  # unknown model or version first, as REST
        except ApiError:
            call.relabel(v2.served_model(svc.registry, model))
            raise
        call.relabel(rt.name)
        work = v2.infer(svc.ops, rt, model, decode_inputs(request), parameters(request))
        outs, res = self._in_loop(work, timeout)
        call.count_items(res.item_count)
        resp = pb.ModelInferResponse(model_name=model, model_version=str(res.version),
                                     id=request.id)
        for name in v2.selected_outputs([o.name for o in request.outputs], model, outs):
            arr = outs[name]
            resp.outputs.add(name=name, datatype=v2.datatype_of(arr), shape=list(arr.shape))
            resp.raw_output_contents.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        return resp

    @rpc(lambda r: "/v2/repository/index")
    def RepositoryIndex(self, request: Any, call: Call, timeout: float | None) -> Any:
        svc = self.current()
        rows = self._in_loop(v2.repository_index(svc.registry, request.ready), timeout)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**r)
                                                  for r in rows])

    @rpc(lambda r: f"/v2/repository/models/{r.model_name}/load")
    def RepositoryModelLoad(self, request: Any, call: Call, timeout: float | None) -> Any:
        svc = self.current()
        self._in_loop(v2.repository_load(svc.registry, request.model_name), timeout)
        return pb.RepositoryModelLoadResponse()


def _credentials(st: Settings) -> grpc.ServerCredentials | None:
    if not (st.grpc_tls_cert or st.grpc_tls_key):
        return None
    ca = Path(st.grpc_tls_client_ca).read_bytes() if st.grpc_tls_client_ca else None
    pair = (Path(st.grpc_tls_key).read_bytes(), Path(st.grpc_tls_cert).read_bytes())
    return grpc.ssl_server_credentials([pair], root_certificates=ca,
                                       require_client_auth=ca is not None)


def check_settings(st: Settings) -> None:
    """In the main process before workers: a taken port or unreadable TLS files stop the
    start with a clear message (SO_REUSEPORT in the workers would hide the first)."""
    if not st.grpc:
        return
    if bool(st.grpc_tls_cert) != bool(st.grpc_tls_key):
        raise SystemExit("VAE_GRPC_TLS_CERT and VAE_GRPC_TLS_KEY: give both or neither")
    for var, path in (("VAE_GRPC_TLS_CERT", st.grpc_tls_cert), ("VAE_GRPC_TLS_KEY",
                      st.grpc_tls_key), ("VAE_GRPC_TLS_CLIENT_CA", st.grpc_tls_client_ca)):
        if path and not Path(path).is_file():
            raise SystemExit(f"{var}: {path} is not a readable file")
    family = socket.AF_INET6 if ":" in st.grpc_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR, as every server sets it: connections of a stopped server lingering in
        # TIME_WAIT do not make the port "taken" (a quick restart works); a live listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((st.grpc_host, st.grpc_port))
        except OSError as exc:
            raise SystemExit(f"VAE_GRPC_PORT: cannot bind {st.grpc_host}:{st.grpc_port} "
                             f"for gRPC ({exc.strerror})") from None


async def start(current: Callable[[], Any], st: Settings, drain: Drain) -> grpc.Server:
    """Start the gRPC server of this worker; its handlers reach the batchers in this loop.
    Beside KServe V2 it serves grpc.health.v1 (what Kubernetes' gRPC probes call): SERVING,
    and NOT_SERVING from the moment the worker drains."""
    size = st.grpc_max_message_bytes
    # RPCs waiting for a thread are bounded too: past VAE_MAX_CONCURRENCY in flight or waiting,
    # grpc refuses at once (RESOURCE_EXHAUSTED) instead of queueing without limit.
    server = grpc.server(ThreadPoolExecutor(st.grpc_threads, thread_name_prefix="grpc"),
                         options=[("grpc.max_receive_message_length", size),
                                  ("grpc.max_send_message_length", size),
                                  ("grpc.so_reuseport", 1)],
                         maximum_concurrent_rpcs=st.max_concurrency or None)
    pbg.add_GRPCInferenceServiceServicer_to_server(
        Servicer(current, asyncio.get_running_loop(), access_log=st.access_log == "json",
                 auth=BearerAuth.from_settings(st)), server)
    health = HealthServicer()
    for name in ("", "inference.GRPCInferenceService"):
        health.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    drain.on_drain(health.enter_graceful_shutdown)  # every service NOT_SERVING, for good
    address = f"{st.grpc_host}:{st.grpc_port}"
    creds = _credentials(st)
    if creds is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, creds)
    server.start()
    log.info("gRPC (KServe V2) on %s%s", address, " with TLS" if creds else "")
    return server


async def stop(server: grpc.Server, grace: float) -> None:
    """Let in-flight RPCs finish (their batches need this loop running meanwhile)."""
    await asyncio.to_thread(server.stop(grace).wait)
