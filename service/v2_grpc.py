"""KServe V2 gRPC: `inference.GRPCInferenceService` with the stubs tritonclient ships
(tritonclient.grpc.service_pb2_grpc), served by grpc's thread-pool server in each worker; its
handlers hand their rows to that worker's batchers in the event loop, so gRPC requests share
the batchers, limits and metrics with HTTP.

Every worker binds the port with SO_REUSEPORT and the kernel spreads connections over them,
as BentoML spreads HTTP connections (README, "gRPC and workers"). on_deployment checks first
that nothing else holds the port: SO_REUSEPORT would otherwise share it silently.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

from service import oip
from service.accesslog import ACCESS_LOG
from service.admission import ADMISSION
from service.auth import BearerAuth
from service.config import Settings
from service.errors import ApiError, BadInput, LimitExceeded
from service.metrics import ERRORS, series
from service.oip import Tensor

log = logging.getLogger("vae.grpc")
Code = grpc.StatusCode
# typed contents field per datatype (when a client does not send raw_input_contents)
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
            "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
            "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
            "FP32": "fp32_contents", "FP64": "fp64_contents"}
REASONS = {Code.INVALID_ARGUMENT: "bad_input", Code.NOT_FOUND: "not_found",
           Code.RESOURCE_EXHAUSTED: "too_large", Code.UNAVAILABLE: "overload",
           Code.DEADLINE_EXCEEDED: "deadline", Code.CANCELLED: "client_closed",
           Code.UNAUTHENTICATED: "unauthorized"}


def status_code(exc: ApiError) -> grpc.StatusCode:
    """The contract's mapping: bad input, unknown model/version, over a limit, overload."""
    if isinstance(exc, LimitExceeded) or exc.status == 413:
        return Code.RESOURCE_EXHAUSTED
    return {400: Code.INVALID_ARGUMENT, 422: Code.INVALID_ARGUMENT, 404: Code.NOT_FOUND,
            401: Code.UNAUTHENTICATED,
            429: Code.UNAVAILABLE, 503: Code.UNAVAILABLE}.get(exc.status, Code.INTERNAL)


def decode_inputs(request: pb.ModelInferRequest) -> list[Tensor]:
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
        tensors.append(Tensor(t.name, t.datatype, shape,
                              oip.to_array(t.name, t.datatype, shape, data)))
    return tensors


def parameters(request: Any) -> dict[str, Any]:
    out = {}
    for key, p in request.parameters.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which else None
    return out


def _model_label(name: str) -> str:
    return name if name in oip.MODELS else "unknown"


def rpc(label: Callable[[Any], str], admit: bool = False) -> Callable:
    """Metrics, the shared concurrency limit, the deadline and the error mapping of one RPC.
    The handler runs in one of grpc's threads and gets the seconds left before the client's
    deadline (None: no deadline) for what it waits on in the event loop."""
    def deco(fn: Callable) -> Callable:
        def wrapper(self: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
            endpoint, t0, code, message = label(request), time.perf_counter(), Code.OK, ""
            metrics = series(endpoint, "grpc")
            metrics.in_flight.inc()
            admitted = False
            try:
                if self.auth is not None and not self.auth.allows(
                        endpoint, dict(context.invocation_metadata() or ()).get("authorization")):
                    raise ApiError("authorization: a valid bearer token is required "
                                   "(metadata authorization: Bearer <token>)", 401)
                if admit and not (admitted := ADMISSION.try_enter()):
                    raise ApiError(ADMISSION.refusal(), 429)
                left = context.time_remaining()
                return fn(self, request, None if left is None or left > 1e6 else max(left, 0))
            except ApiError as exc:
                code, message = status_code(exc), exc.message
            except TimeoutError:
                code, message = Code.DEADLINE_EXCEEDED, ("the client's deadline passed before "
                                                         "the answer")
            except Exception:
                code = Code.INTERNAL
                log.exception("gRPC %s failed", endpoint)
                raise  # grpc answers UNKNOWN, without the details
            finally:
                if admitted:
                    ADMISSION.leave()
                if code is Code.OK and not context.is_active():
                    code = Code.CANCELLED  # the client went away before the answer
                metrics.in_flight.dec()
                metrics.requests(code.name).inc()
                metrics.latency.observe(time.perf_counter() - t0)
                if code is not Code.OK:
                    ERRORS.labels(endpoint, REASONS.get(code, "internal"), "grpc").inc()
                if self.access_log:
                    ACCESS_LOG.write({
                        "ts": time.time(), "protocol": "grpc", "method": type(request).__name__,
                        "path": endpoint, "status": code.name, "peer": context.peer(),
                        "ms": round(1000 * (time.perf_counter() - t0), 3)})
            context.abort(code, message)  # raises: the RPC ends with this status
        return wrapper
    return deco


def _tensor_meta(specs: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=s["name"], datatype=s["datatype"],
                                                    shape=s["shape"]) for s in specs]


class Servicer(pbg.GRPCInferenceServiceServicer):
    """The V2 RPCs, run by grpc's synchronous server in its threads: per call it costs much
    less than grpc.aio, whose completion-queue poller thread hands every event of every call to
    the event loop (benchmark P6). What must happen in the event loop (the batchers, the
    repository) is handed to it; the rest (protobuf in and out, validation) stays here."""

    def __init__(self, current: Callable[[], Any], loop: asyncio.AbstractEventLoop,
                 access_log: bool = False, auth: Any = None):
        self.current = current  # -> the worker's service instance
        self.loop = loop  # the worker's event loop, where the batchers live
        self.auth = auth  # service/auth.py BearerAuth, or None
        self.access_log = access_log  # one JSON line per RPC, as the HTTP side writes

    def _in_loop(self, work: Coroutine, timeout: float | None) -> Any:
        result = asyncio.run_coroutine_threadsafe(work, self.loop)
        try:
            return result.result(timeout)
        except TimeoutError:
            result.cancel()
            raise

    @rpc(lambda r: "/v2/health/live")
    def ServerLive(self, request: Any, timeout: float | None) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc(lambda r: "/v2/health/ready")
    def ServerReady(self, request: Any, timeout: float | None) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self.current().models.runtimes))

    @rpc(lambda r: f"/v2/models/{_model_label(r.name)}/ready")
    def ModelReady(self, request: Any, timeout: float | None) -> pb.ModelReadyResponse:
        ready = oip.model_ready(self.current().models, request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @rpc(lambda r: "/v2")
    def ServerMetadata(self, request: Any, timeout: float | None) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**oip.server_metadata())

    @rpc(lambda r: f"/v2/models/{_model_label(r.name)}")
    def ModelMetadata(self, request: Any, timeout: float | None) -> pb.ModelMetadataResponse:
        md = oip.model_metadata(self.current().models, request.name, request.version)
        return pb.ModelMetadataResponse(
            name=md["name"], versions=md["versions"], platform=md["platform"],
            inputs=_tensor_meta(md["inputs"]), outputs=_tensor_meta(md["outputs"]))

    @rpc(lambda r: f"/v2/models/{_model_label(r.model_name)}/infer", admit=True)
    def ModelInfer(self, request: Any, timeout: float | None) -> pb.ModelInferResponse:
        svc = self.current()
        model = request.model_name
        rt = oip.resolve(svc.models, model, request.model_version)
        p = oip.plan(rt, model, decode_inputs(request), parameters(request), svc.settings)
        result = rt.submit_threadsafe(p.graph, p.rows, self.loop)
        try:
            outs = p.finish(result.result(timeout))
        except TimeoutError:
            result.cancel()  # the batcher skips it if it has not run yet
            raise
        series(f"/v2/models/{model}/infer", "grpc").items.inc(p.items)
        resp = pb.ModelInferResponse(model_name=model, model_version=str(rt.manifest.version),
                                     id=request.id)
        for name in [o.name for o in request.outputs] or list(outs):
            if name not in outs:
                raise BadInput(f"outputs: {name!r} is not an output of {model!r} "
                               f"(outputs: {', '.join(outs)})")
            arr = outs[name]
            resp.outputs.add(name=name, datatype=oip.DATATYPE_OF[arr.dtype],
                             shape=list(arr.shape))
            resp.raw_output_contents.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        return resp

    @rpc(lambda r: "/v2/repository/index")
    def RepositoryIndex(self, request: Any, timeout: float | None) -> Any:
        svc = self.current()
        rows = self._in_loop(oip.repository_index(svc.models, svc.watcher, request.ready),
                             timeout)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**r)
                                                  for r in rows])

    @rpc(lambda r: "/v2/repository/models/{model}/load")
    def RepositoryModelLoad(self, request: Any, timeout: float | None) -> Any:
        svc = self.current()
        self._in_loop(oip.repository_load(svc.models, svc.watcher, request.model_name), timeout)
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
        try:
            s.bind((st.grpc_host, st.grpc_port))
        except OSError as exc:
            raise SystemExit(f"VAE_GRPC_PORT: cannot bind {st.grpc_host}:{st.grpc_port} "
                             f"for gRPC ({exc.strerror})") from None


async def start(current: Callable[[], Any], st: Settings) -> grpc.Server:
    """Start the gRPC server of this worker; its handlers reach the batchers in this loop."""
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
