"""HTTP: rank 0's API server (the routes tpu-deploy touches) and the ranks ≥1 dummy health server, both in
the main process; whatever needs the engine goes through the TokenizerManager to the scheduler process."""

import json
import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import __version__
from .faults import FaultsError, health_check_timeout_s, read_faults


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # uvicorn sets SO_REUSEADDR too

    def handle_error(self, request, client_address):
        pass  # a client that hangs up is not the server's problem


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(host, port, app):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "uvicorn"
        sys_version = ""
        # uvicorn runs on asyncio, which sets TCP_NODELAY on every TCP connection it accepts (CPython
        # asyncio/selector_events.py: _SelectorSocketTransport calls base_events._set_nodelay, since 3.7).
        # Without it the head and the body, written separately here, wait out the client's delayed ACK
        # (~40 ms) on every answer: a stall the real server does not have.
        disable_nagle_algorithm = True
        # uvicorn closes a kept-alive connection idle for timeout_keep_alive seconds; sglang's launch_server
        # passes 5 (sgl-project/sglang python/sglang/srt/entrypoints/http_server.py, uvicorn.run(...,
        # timeout_keep_alive=5)); sglang-jax's http_server.py is taken to do the same (inferred, not read).
        # socketserver applies it to every read of the connection, so an idle one is closed after 5 s.
        timeout = 5

        def log_message(self, *args):
            pass

        def version_string(self):
            return "uvicorn"

        def _dispatch(self):
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            try:
                result = app.handle(self.command, parts.path, parse_qs(parts.query), self.headers, body, self.connection)
                if result is None:  # the client went away while the engine did not answer
                    self.close_connection = True
                    return
                status, ctype, payload = result[:3]
                extra = result[3] if len(result) > 3 else []
                if callable(payload):  # server-sent events
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    for k, v in extra:
                        self.send_header(k, v)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    payload(self.wfile)
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
                self.send_response(status)
                if data or ctype != "application/json":
                    self.send_header("Content-Type", ctype)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    cls = _Server6 if ":" in host else _Server
    return cls((host, port), Handler)


def record_call(port, path, status):
    """Test observation only (not in sglang-jax): one JSON line per answer rank 0 gives on /health and
    /health_generate, appended to $TPD_SIM_ROOT/calls/server.jsonl as {t: epoch ms as the answer goes out, host,
    port, path, status}, so a test or benchmark can tell when the server started answering (and how often it
    was probed) without reading the server's log, whose timestamps have whole seconds. Never fails a request."""
    root = os.environ.get("TPD_SIM_ROOT")
    if not root:
        return
    line = json.dumps({"t": round(time.time() * 1000, 1), "host": socket.gethostname(), "port": port, "path": path, "status": status})
    try:
        fd = os.open(os.path.join(root, "calls", "server.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())  # one short O_APPEND write: never interleaved with another host's
        finally:
            os.close(fd)
    except OSError:
        pass


NOT_FOUND = (404, "application/json", {"detail": "Not Found"})
NOT_ALLOWED = (405, "application/json", {"detail": "Method Not Allowed"})
EMPTY_200 = (200, "application/json", b"")


class DummyHealthApp:
    """Ranks ≥1 (`launch_dummy_health_check_server`): /health and /health_generate, nothing else."""

    def handle(self, method, path, query, headers, body, client=None):
        if path in ("/health", "/health_generate"):
            return EMPTY_200 if method in ("GET", "HEAD") else NOT_ALLOWED
        return NOT_FOUND


class ApiApp:
    """Rank 0."""

    ROUTES = {
        "/health": ("GET",),
        "/health_generate": ("GET",),
        "/get_model_info": ("GET",),
        "/get_server_info": ("GET",),
        "/v1/models": ("GET",),
        "/v1/chat/completions": ("POST",),
        "/v1/completions": ("POST",),
        "/generate": ("POST", "PUT"),
        "/metrics": ("GET",),
    }

    def __init__(self, sa, log, tm, world):
        self.sa = sa
        self.log = log
        self.tm = tm
        self.world = world
        self.created = int(time.time())
        self.context_length = self.sa.context_length or 40960
        # Test observation only (not in sglang-jax): model requests this server answered, so a test can see
        # which replica served what without trusting tpu-deploy's proxy. Read in /get_server_info.
        self.requests_served = 0
        self._served_lock = threading.Lock()

    # --- request plumbing ------------------------------------------------------------------------
    def handle(self, method, path, query, headers, body, client=None):
        # Middleware order as in http_server.py: the API-key check (`add_api_key_middleware`, added last in
        # launch_server, so outermost) answers 401 before CORSMiddleware can add its headers; it lets
        # OPTIONS through (common_utils.py). Then CORS (docs/upstream/hostkeys-sglang-facts.md §B5).
        key = self.sa.api_key
        if key and method != "OPTIONS" and not path.startswith("/health") and not path.startswith("/metrics"):
            if headers.get("Authorization") != "Bearer " + key:
                return 401, "application/json", {"error": "Unauthorized"}
        origin = headers.get("Origin")
        if origin is None:
            return self._route(method, path, query, body, client)
        if method == "OPTIONS" and headers.get("Access-Control-Request-Method") is not None:
            return self._cors_preflight(origin, headers)
        routed = self._route(method, path, query, body, client)
        if routed is None:
            return None
        return (*routed[:3], self._cors_simple_headers(origin, headers))

    # starlette/middleware/cors.py CORSMiddleware with allow_origins=["*"], allow_credentials=True,
    # allow_methods=["*"], allow_headers=["*"]: every origin is allowed, reflected when it must be.
    CORS_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"

    @staticmethod
    def _cors_simple_headers(origin, headers):
        """CORSMiddleware.send: simple_headers, and the request's Origin instead of * when it sent cookies."""
        out = [("access-control-allow-origin", "*"), ("access-control-allow-credentials", "true")]
        if headers.get("Cookie") is not None:
            out = [("access-control-allow-origin", origin), ("access-control-allow-credentials", "true"), ("vary", "Origin")]
        return out

    def _cors_preflight(self, origin, headers):
        """CORSMiddleware.preflight_response: 200 "OK", the origin reflected (allow_credentials), requested headers mirrored."""
        out = [
            ("vary", "Origin"),
            ("access-control-allow-methods", self.CORS_METHODS),
            ("access-control-max-age", "600"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-origin", origin),
        ]
        requested = headers.get("Access-Control-Request-Headers")
        if requested is not None:
            out.append(("access-control-allow-headers", requested))
        if headers.get("Access-Control-Request-Method") not in self.CORS_METHODS.split(", "):
            return 400, "text/plain; charset=utf-8", b"Disallowed CORS method", out
        return 200, "text/plain; charset=utf-8", b"OK", out

    def _route(self, method, path, query, body, client=None):
        methods = self.ROUTES.get(path)
        if methods is None or (path == "/metrics" and not self.sa.enable_metrics):
            return NOT_FOUND
        if method not in methods and not (method == "HEAD" and "GET" in methods):  # Starlette adds HEAD to GET routes
            return NOT_ALLOWED
        name = path.strip("/").replace("/", "_").replace("v1_", "openai_")
        return getattr(self, "r_" + name)(query, body, client)

    @staticmethod
    def _json_body(body):
        try:
            obj = json.loads(body or b"null")
        except ValueError as err:
            return None, (400, "application/json", {"object": "error", "message": f"invalid JSON body: {err}", "type": "BadRequestError", "code": 400})
        if not isinstance(obj, dict):
            return None, (400, "application/json", {"object": "error", "message": "the body must be a JSON object", "type": "BadRequestError", "code": 400})
        return obj, None

    @staticmethod
    def _faults():
        try:
            return read_faults()
        except FaultsError:
            return {}

    def _generate(self, client):
        """One request through the scheduler: None if the client gave up first (a stuck engine never answers)."""
        rid = self.tm.submit("gen")
        if self.tm.wait(rid, client) is None:
            self.tm.discard(rid)
            return False
        return True

    def _reply_text(self):
        with self._served_lock:
            self.requests_served += 1
        return (
            f"Hello from the sglang-jax test double serving {self.sa.served_model_name} "
            f"on {self.sa.nnodes} node(s) with tp_size={self.sa.tp_size}."
        )

    # --- routes ----------------------------------------------------------------------------------
    def r_health(self, query, body, client):
        record_call(self.sa.port, "/health", 200)
        return EMPTY_200  # `return Response(status_code=200)`: no engine check at all

    def r_health_generate(self, query, body, client):
        """http_server.py health_generate: submit a 1-token request, poll once a second for any output from
        the detokenizer newer than the start, 503 after HEALTH_CHECK_TIMEOUT."""
        if query.get("multimodal") == ["True"]:
            return 200, "application/json", b"null"
        faults = self._faults()
        delay = faults.get("slowHealthGenerateMs") or 0
        if delay:
            time.sleep(delay / 1000.0)  # faults.server.slowHealthGenerateMs
        timeout = health_check_timeout_s(faults) if faults else health_check_timeout_s({})
        tic = time.time()
        rid = self.tm.submit("gen")
        while time.time() < tic + timeout:
            time.sleep(1)
            if self.tm.last_receive_tstamp > tic:
                self.tm.discard(rid)
                record_call(self.sa.port, "/health_generate", 200)
                return EMPTY_200
        self.tm.discard(rid)
        record_call(self.sa.port, "/health_generate", 503)
        self.log.info(
            "Health check failed. Server couldn't get a response from detokenizer for last "
            f"{timeout:g} seconds. tic start time: {time.strftime('%H:%M:%S', time.localtime(tic))}. "
            f"last_heartbeat time: {time.strftime('%H:%M:%S', time.localtime(self.tm.last_receive_tstamp))}"
        )
        return 503, "application/json", b""

    def r_get_model_info(self, query, body, client):
        return 200, "application/json", {
            "model_path": self.sa.model_path,
            "tokenizer_path": self.sa.tokenizer_path,
            "is_generation": True,
            "preferred_sampling_params": self.sa.preferred_sampling_params,
        }

    def r_get_server_info(self, query, body, client):
        # `**dataclasses.asdict(server_args), **scheduler_info, "internal_states": await get_internal_state()`:
        # every ServerArgs field (api_key in clear), and nothing until the scheduler answers.
        rid = self.tm.submit("internal_state")
        state = self.tm.wait(rid, client)
        if state is None:
            return None
        info = self.sa.asdict()
        info.update({
            "max_total_num_tokens": self.tm.scheduler_info.get("max_total_num_tokens"),
            "max_req_input_len": self.tm.scheduler_info.get("max_req_input_len"),
            "internal_states": state.get("states"),
            "version": __version__,
            "ranks_seen": sorted(self.world),
            "requests_served": self.requests_served,
            "peers": [
                {
                    "rank": r,
                    "internal_ip": self.world[r]["internal_ip"],
                    "worker_id": self.world[r]["worker_id"],
                    "accelerator_type": self.world[r]["accelerator_type"],
                    "slice_id": self.world[r]["slice_id"],
                    "hostname": self.world[r]["hostname"],
                }
                for r in sorted(self.world)
            ],
        })
        return 200, "application/json", info

    def r_openai_models(self, query, body, client):
        name = self.sa.served_model_name
        return 200, "application/json", {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": self.created, "owned_by": "sglang", "root": name, "max_model_len": self.context_length}],
        }

    def r_metrics(self, query, body, client):
        name = self.sa.served_model_name
        text = (
            "# HELP sglang:num_running_reqs The number of running requests.\n"
            "# TYPE sglang:num_running_reqs gauge\n"
            f'sglang:num_running_reqs{{model_name="{name}"}} 0.0\n'
        )
        return 200, "text/plain; version=0.0.4; charset=utf-8", text.encode()

    def r_openai_chat_completions(self, query, body, client):
        req, err = self._json_body(body)
        if err:
            return err
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, "application/json", {"object": "error", "message": "messages: a non-empty list is required", "type": "BadRequestError", "code": 400}
        if not self._generate(client):
            return None
        text = self._reply_text()
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        usage = {"prompt_tokens": 8 * len(messages), "completion_tokens": len(text.split()), "total_tokens": 8 * len(messages) + len(text.split())}
        if req.get("stream"):
            def stream(out):
                for delta, finish in (({"role": "assistant", "content": ""}, None), ({"content": text}, None), ({}, "stop")):
                    chunk = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": self.sa.served_model_name,
                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    out.write(f"data: {json.dumps(chunk)}\n\n".encode())
                out.write(b"data: [DONE]\n\n")
            return 200, "text/event-stream", stream
        return 200, "application/json", {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.sa.served_model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        }

    def r_openai_completions(self, query, body, client):
        req, err = self._json_body(body)
        if err:
            return err
        if "prompt" not in req:
            return 400, "application/json", {"object": "error", "message": "prompt: field required", "type": "BadRequestError", "code": 400}
        if not self._generate(client):
            return None
        text = self._reply_text()
        return 200, "application/json", {
            "id": "cmpl-" + uuid.uuid4().hex[:24],
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.sa.served_model_name,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 8, "completion_tokens": len(text.split()), "total_tokens": 8 + len(text.split())},
        }

    def r_generate(self, query, body, client):
        req, err = self._json_body(body)
        if err:
            return err
        if req.get("text") is None and req.get("input_ids") is None:
            return 400, "application/json", {"object": "error", "message": "Either text or input_ids should be provided.", "type": "BadRequestError", "code": 400}
        if not self._generate(client):
            return None
        prompts = req.get("text") if req.get("text") is not None else req.get("input_ids")
        batch = isinstance(prompts, list) and (req.get("text") is not None or (prompts and isinstance(prompts[0], list)))
        n = len(prompts) if batch else 1
        text = self._reply_text()
        outs = [
            {"text": text, "meta_info": {"id": uuid.uuid4().hex, "finish_reason": {"type": "stop", "matched": None},
                                         "prompt_tokens": 8, "completion_tokens": len(text.split()), "cached_tokens": 0,
                                         "model": self.sa.served_model_name}}
            for _ in range(n)
        ]
        if req.get("stream"):
            def stream(out):
                for o in outs:
                    out.write(f"data: {json.dumps(o)}\n\n".encode())
                out.write(b"data: [DONE]\n\n")
            return 200, "text/event-stream", stream
        return 200, "application/json", outs if batch else outs[0]


def serve_in_thread(server):
    t = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    t.start()
    return t
