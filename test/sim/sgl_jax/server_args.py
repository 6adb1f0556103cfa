"""Command line of the sglang-jax double: the real flag set, aliases, types, choices and defaults.

The table mirrors `ServerArgs.add_cli_args` and `MultimodalServerArgs.add_cli_args` of
sgl-project/sglang-jax at cddbf6f1 (the parser the real `launch_server` builds). Every real
flag is listed, not only the ones tpu-deploy uses, because argparse's `allow_abbrev` makes the
set of accepted prefixes depend on the whole flag set: a missing flag would let the double
accept an abbreviation that the real server rejects as ambiguous.
"""

import argparse
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Flag:
    opts: tuple
    kind: str
    default: object
    required: bool = False
    nargs: object = None
    const: object = None
    choices: object = None
    dest: object = None
    server_arg: bool = True  # False: a MultimodalServerArgs field, absent from ServerArgs


def _f(opts, kind, default, **kw):
    return Flag(opts, kind, default, **kw)


def nullable_str(val):
    if not val or val == "None":
        return None
    return val


# Unresolved upstream choices (reasoning/tool-call parsers, LoRA target modules) are left open.
FLAGS = (
    _f(('--model-path', '--model'), 'str', None, required=True),
    _f(('--tokenizer-path',), 'str', None),
    _f(('--tokenizer-mode',), 'str', 'auto', choices=['auto', 'slow']),
    _f(('--tokenizer-backend',), 'str', 'huggingface', choices=['huggingface', 'fastokens']),
    _f(('--skip-tokenizer-init',), 'store_true', False),
    _f(('--load-format',), 'str', 'auto', choices=['auto', 'pt', 'safetensors', 'npcache', 'dummy', 'sharded_state', 'gguf', 'bitsandbytes', 'layered', 'remote']),
    _f(('--model-loader-extra-config',), 'str', '{}'),
    _f(('--trust-remote-code',), 'store_true', False),
    _f(('--context-length',), 'int', None),
    _f(('--is-embedding',), 'store_true', False),
    _f(('--revision',), 'str', None),
    _f(('--model-impl',), 'str', 'auto'),
    _f(('--model-layer-nums',), 'int', None),
    _f(('--grammar-backend',), 'str', None, choices=['llguidance', 'none']),
    _f(('--host',), 'str', '127.0.0.1'),
    _f(('--port',), 'int', 30000),
    _f(('--skip-server-warmup',), 'store_true', False),
    _f(('--warmups',), 'str', None),
    _f(('--dtype',), 'str', 'auto', choices=['auto', 'half', 'float16', 'bfloat16', 'float', 'float32']),
    _f(('--dtype-config',), 'str', None),
    _f(('--quantization',), 'str', None, choices=['awq', 'fp8', 'gptq', 'marlin', 'gptq_marlin', 'awq_marlin', 'bitsandbytes', 'gguf', 'modelopt', 'modelopt_fp4', 'petit_nvfp4', 'w8a8_int8', 'w8a8_fp8', 'moe_wna16', 'qoq', 'w4afp8']),
    _f(('--quantization-param-path',), 'nullable_str', None),
    _f(('--quantization-config-path',), 'str', None),
    _f(('--kv-cache-dtype',), 'str', 'auto', choices=['auto', 'fp8_e5m2', 'fp8_e4m3', 'bf16']),
    _f(('--mem-fraction-static',), 'float', None),
    _f(('--max-running-requests',), 'int', None),
    _f(('--max-total-tokens',), 'int', None),
    _f(('--chunked-prefill-size',), 'int', None),
    _f(('--enable-mixed-chunk',), 'store_true', False),
    _f(('--max-prefill-tokens',), 'int', 16384),
    _f(('--disable-overlap-schedule',), 'store_true', False),
    _f(('--schedule-policy',), 'str', 'fcfs', choices=['lpm', 'random', 'fcfs', 'dfs-weight']),
    _f(('--schedule-conservativeness',), 'float', 1.0),
    _f(('--page-size',), 'int', 1),
    _f(('--swa-full-tokens-ratio',), 'float', 0.8),
    _f(('--recurrent-state-memory-ratio',), 'float', 0.9),
    _f(('--max-recurrent-state-size',), 'int', None),
    _f(('--recurrent-track-interval',), 'int', None),
    _f(('--disable-hybrid-swa-memory',), 'store_true', False),
    _f(('--device',), 'str', None),
    _f(('--device-indexes',), 'int', None, nargs='+'),
    _f(('--pd-disaggregation',), 'str', '', nargs='?', const='pathways', choices=['', 'pathways']),
    _f(('--pd-prefill-mem-fraction',), 'float', 0.85),
    _f(('--pd-decode-mem-fraction',), 'float', 0.85),
    _f(('--pd-prefill-max-tokens',), 'int', 20480),
    _f(('--pd-decode-max-tokens',), 'int', 25600),
    _f(('--pd-num-prefill',), 'int', 1),
    _f(('--pd-num-decode',), 'int', 1),
    _f(('--pd-prefill-tp-size',), 'int', 0),
    _f(('--pd-prefill-ep-size',), 'int', 0),
    _f(('--tensor-parallel-size', '--tp-size'), 'int', 1),
    _f(('--ep-size',), 'int', 1),
    _f(('--ep-num-redundant-experts',), 'int', 0),
    _f(('--ep-dispatch-algorithm',), 'str', None, choices=['static', 'dynamic', 'fake']),
    _f(('--enable-sequence-parallel',), 'store_true', False),
    _f(('--stream-interval',), 'int', 1),
    _f(('--stream-output',), 'store_true', False),
    _f(('--random-seed',), 'int', None),
    _f(('--constrained-json-whitespace-pattern',), 'str', None),
    _f(('--constrained-json-disable-any-whitespace',), 'store_true', False),
    _f(('--watchdog-timeout',), 'float', 300),
    _f(('--dist-timeout',), 'int', None),
    _f(('--download-dir',), 'str', None),
    _f(('--sleep-on-idle',), 'store_true', False),
    _f(('--log-level',), 'str', 'info'),
    _f(('--log-level-http',), 'str', None),
    _f(('--log-requests',), 'store_true', False),
    _f(('--log-requests-level',), 'int', 0, choices=[0, 1, 2, 3]),
    _f(('--crash-dump-folder',), 'str', None),
    _f(('--show-time-cost',), 'store_true', False),
    _f(('--enable-metrics',), 'store_true', False),
    _f(('--enable-metrics-for-all-schedulers',), 'store_true', False),
    _f(('--bucket-time-to-first-token',), 'float', None, nargs='+'),
    _f(('--bucket-inter-token-latency',), 'float', None, nargs='+'),
    _f(('--bucket-e2e-request-latency',), 'float', None, nargs='+'),
    _f(('--decode-log-interval',), 'int', 40),
    _f(('--enable-request-time-stats-logging',), 'store_true', False),
    _f(('--kv-events-config',), 'str', None),
    _f(('--api-key',), 'str', None),
    _f(('--served-model-name',), 'str', None),
    _f(('--file-storage-path',), 'str', 'sglang_storage'),
    _f(('--enable-cache-report',), 'store_true', False),
    _f(('--reasoning-parser',), 'str', None),
    _f(('--tool-call-parser',), 'str', None),
    _f(('--data-parallel-size', '--dp-size'), 'int', 1),
    _f(('--dp-schedule-policy',), 'str', None, choices=['round_robin', 'min_running_queue', 'cache_aware', 'shape_aware']),
    _f(('--dist-init-addr',), 'str', None),
    _f(('--nnodes',), 'int', 1),
    _f(('--node-rank',), 'int', 0),
    _f(('--json-model-override-args',), 'str', '{}'),
    _f(('--preferred-sampling-params',), 'str', None),
    _f(('--disable-radix-cache',), 'store_true', False),
    _f(('--enable-unified-radix-tree',), 'store_true', False),
    _f(('--hicache-storage',), 'str', 'disable', choices=['disable', 'none', 'file']),
    _f(('--hicache-ratio',), 'float', 2.0),
    _f(('--hicache-write-through-threshold',), 'int', 1),
    _f(('--hicache-write-policy',), 'str', 'write_through', choices=['write_through', 'write_through_selective', 'write_back']),
    _f(('--enable-recurrent-extra-buffer',), 'store_true', False),
    _f(('--allow-auto-truncate',), 'store_true', False),
    _f(('--enable-tokenizer-batch-encode',), 'store_true', False),
    _f(('--enable-precision-tracer',), 'store_true', False),
    _f(('--enable-expert-balance-debug',), 'store_true', False),
    _f(('--expert-balance-segment-counter',), 'int', 100),
    _f(('--expert-balance-output-file',), 'str', None),
    _f(('--init-expert-location',), 'str', 'trivial'),
    _f(('--enable-expert-distribution-recorder',), 'store_true', False),
    _f(('--expert-distribution-recorder-buffer-size',), 'int', 100),
    _f(('--expert-distribution-recorder-output-file',), 'str', None),
    _f(('--max-seq-len',), 'int', 4096),
    _f(('--precompile-token-paddings',), 'int', None, nargs='+'),
    _f(('--precompile-bs-paddings',), 'int', None, nargs='+'),
    _f(('--disable-precompile',), 'store_true', False),
    _f(('--attention-backend',), 'str', 'fa', choices=['native', 'fa', 'fa_mha', 'dsa_sparse']),
    _f(('--gdn-prefill-impl',), 'str', 'fused_chunk_parallel', choices=['chunked_jax', 'fused_chunk_parallel']),
    _f(('--dsa-use-pallas',), 'store_true', True),
    _f(('--moe-backend',), 'str', 'epmoe', choices=['epmoe', 'fused', 'fused_v2', 'auto']),
    _f(('--disable-jax-allreduce-metadata',), 'store_true', False),
    _f(('--disable-topk-kernel',), 'store_false', True, dest='enable_topk_kernel'),
    _f(('--enable-nan-detection',), 'store_true', False),
    _f(('--speculative-algorithm',), 'str', None, choices=['EAGLE', 'EAGLE3', 'NEXTN', 'STANDALONE', 'DFLASH']),
    _f(('--speculative-draft-model-path', '--speculative-draft-model'), 'str', None),
    _f(('--speculative-draft-model-revision',), 'str', None),
    _f(('--speculative-num-steps',), 'int', 4),
    _f(('--speculative-eagle-topk',), 'int', 5),
    _f(('--speculative-num-draft-tokens',), 'int', 4),
    _f(('--speculative-accept-threshold-single',), 'float', 1.0),
    _f(('--speculative-accept-threshold-acc',), 'float', 1.0),
    _f(('--enable-deterministic-sampling',), 'store_true', False),
    _f(('--enable-single-process',), 'store_true', False),
    _f(('--use-sort-for-toppk-minp',), 'store_true', False),
    _f(('--multimodal',), 'store_true', False),
    _f(('--enable-lora',), 'store_true', False),
    _f(('--lora-paths',), 'str', None, nargs='*'),
    _f(('--max-loras-per-batch',), 'int', 8),
    _f(('--max-lora-rank',), 'int', None),
    _f(('--max-loaded-loras',), 'int', None),
    _f(('--lora-target-modules',), 'str', None, nargs='*'),
    _f(('--lora-eviction-policy',), 'str', 'lru', choices=['lru']),
    _f(('--enable-static-lora',), 'store_true', False),
    _f(('--lora-scaling',), 'float', None),
    _f(('--enable-engine-loop-run-forever-daemon',), 'store_true', False),
    _f(('--enable-return-routed-experts',), 'store_true', False),
    _f(('--disaggregation-enable-d2h',), 'bool_optional', False),
    _f(('--disaggregation-use-raiden',), 'bool_optional', False),
    _f(('--disaggregation-enable-chunk-prefill-transfer',), 'bool_optional', False),
    _f(('--disaggregation-side-channel-port',), 'int', 9600),
    _f(('--disaggregation-mode',), 'str', 'null', choices=['null', 'prefill', 'decode']),
    _f(('--disaggregation-bootstrap-url',), 'str', None),
    _f(('--disaggregation-bootstrap-port',), 'int', 8998),
    _f(('--disaggregation-transfer-port',), 'int', 30001),
    _f(('--disaggregation-d2h-pool-size',), 'int', 64),
    _f(('--disaggregation-d2h-max-tokens',), 'int', None),
    _f(('--disaggregation-host-ip',), 'str', None),
    _f(('--disaggregation-bootstrap-timeout-seconds',), 'float', 5.0),
    _f(('--disaggregation-pull-timeout-seconds',), 'float', 30.0),
    _f(('--disaggregation-ack-timeout-seconds',), 'float', 60.0),
    _f(('--disaggregation-orphan-reaper-interval-seconds',), 'float', 5.0),
    _f(('--disaggregation-decode-watchdog-seconds',), 'float', 0.0),
    _f(('--disaggregation-num-reserved-decode-tokens',), 'int', 512),
    _f(('--disaggregation-max-inflight-transfers',), 'int', 8),
    _f(('--disaggregation-shared-secret',), 'str', None),
    _f(('--disaggregation-channel-number',), 'int', 4),
    _f(('--embedded-cfg-scale',), 'float', 6.0, server_arg=False),
    _f(('--flow-shift',), 'float', None, server_arg=False),
    _f(('--dit-precision',), 'str', None, choices=['fp32', 'fp16', 'bf16'], server_arg=False),
    _f(('--vae-precision',), 'str', 'bf16', choices=['fp32', 'fp16', 'bf16'], server_arg=False),
    _f(('--vae-tiling',), 'store_true', True, server_arg=False),
    _f(('--vae-sp',), 'store_true', False, server_arg=False),
    _f(('--text-encoder-precisions',), 'str', ('fp32',), nargs='+', choices=['fp32', 'fp16', 'bf16'], server_arg=False),
    _f(('--image-encoder-precision',), 'str', 'bf16', choices=['fp32', 'fp16', 'bf16'], server_arg=False),
    _f(('--precompile-width-heights',), 'str', None, nargs='+', server_arg=False),
    _f(('--precompile-frame-paddings',), 'int', None, nargs='+', server_arg=False),
)

_TYPES = {"str": str, "int": int, "float": float, "nullable_str": nullable_str}


def build_parser():
    parser = argparse.ArgumentParser()  # allow_abbrev stays on, as in the real server
    for flag in FLAGS:
        kw = {}
        if flag.dest is not None:
            kw["dest"] = flag.dest
        if flag.kind == "store_true":
            kw["action"] = "store_true"
            if flag.default is not False:
                kw["default"] = flag.default
        elif flag.kind == "store_false":
            kw["action"] = "store_false"
        elif flag.kind == "bool_optional":
            kw["action"] = argparse.BooleanOptionalAction
            kw["default"] = flag.default
        else:
            if flag.kind in _TYPES and flag.opts[0] != "--pd-disaggregation":
                kw["type"] = _TYPES[flag.kind]
            if not flag.required:
                kw["default"] = list(flag.default) if isinstance(flag.default, tuple) else flag.default
        if flag.required:
            kw["required"] = True
        if flag.nargs is not None:
            kw["nargs"] = flag.nargs
        if flag.const is not None:
            kw["const"] = flag.const
        if flag.choices is not None:
            kw["choices"] = flag.choices
        parser.add_argument(*flag.opts, **kw)
    return parser


def _field_name(flag):
    dest = flag.dest or flag.opts[0][2:].replace("-", "_")
    return {"tensor_parallel_size": "tp_size", "data_parallel_size": "dp_size"}.get(dest, dest)


def _dest(flag):
    return flag.dest or flag.opts[0][2:].replace("-", "_")


SERVER_FIELDS = tuple(_field_name(f) for f in FLAGS if f.server_arg)


class ArgsError(Exception):
    """A check the real server makes in its main process (traceback, exit 1)."""

    def __init__(self, exc_line, detail):
        super().__init__(exc_line)
        self.exc_line = exc_line
        self.detail = detail


@dataclass
class ServerArgs:
    values: dict = field(default_factory=dict)

    def __getattr__(self, name):
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def asdict(self):
        """dataclasses.asdict(server_args): every field, secrets included. The real ServerArgs declares
        `api_key: Optional[str] = None` without repr=False (sgl-project/sglang-jax sgl_jax/srt/server_args.py), so the
        `server_args=ServerArgs(...)` log line and GET /get_server_info (http_server.py get_server_info,
        `**dataclasses.asdict(...server_args)`) both carry the key in clear."""
        return dict(self.values)

    def __repr__(self):
        body = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"ServerArgs({body})"


def parse_server_args(argv):
    """argparse (exit 2 on usage errors), then the defaults `ServerArgs.__post_init__` fills in."""
    ns = build_parser().parse_args(argv)
    values = {}
    for flag in FLAGS:
        if flag.server_arg:
            values[_field_name(flag)] = getattr(ns, _dest(flag))
    v = values
    if v["tokenizer_path"] is None:
        v["tokenizer_path"] = v["model_path"]
    platform_env = os.environ.get("JAX_PLATFORMS", "")
    if v["device"]:
        if platform_env and platform_env != v["device"]:
            raise ArgsError(
                f"AssertionError: device {v['device']} is not consistent with 'JAX_PLATFORMS' {platform_env}",
                "--device and $JAX_PLATFORMS disagree",
            )
    else:
        v["device"] = platform_env or "tpu"
    if v["served_model_name"] is None:
        v["served_model_name"] = v["model_path"]
    if v["random_seed"] is None:
        v["random_seed"] = 42
    if v["mem_fraction_static"] is None:
        v["mem_fraction_static"] = 0.88
    if v["chunked_prefill_size"] is None:
        v["chunked_prefill_size"] = 4096
    if v["grammar_backend"] is None:
        v["grammar_backend"] = "llguidance"
    return ServerArgs(values)


def check_server_args(sa):
    """`ServerArgs.check_server_args`, the part that can fail for a launcher's arguments."""
    if sa.nnodes == 0:
        raise ArgsError("ZeroDivisionError: integer modulo by zero", "--nnodes must be at least 1")
    if sa.tp_size % sa.nnodes != 0:
        raise ArgsError(
            "AssertionError: tp_size must be divisible by number of nodes",
            f"--tp-size {sa.tp_size} is not divisible by --nnodes {sa.nnodes}",
        )
    if sa.chunked_prefill_size > 0 and (sa.page_size <= 0 or sa.chunked_prefill_size % sa.page_size != 0):
        raise ArgsError(
            "AssertionError: chunked_prefill_size must be divisible by page_size",
            f"--chunked-prefill-size {sa.chunked_prefill_size} is not divisible by --page-size {sa.page_size}",
        )


def parse_dist_init_addr(sa):
    """`PortArgs.init_new`: returns (host, port) or raises ArgsError like the real unpacking does."""
    if sa.nnodes <= 1:
        return None
    if sa.dist_init_addr is None:
        raise ArgsError(
            "AttributeError: 'NoneType' object has no attribute 'split'",
            f"--nnodes {sa.nnodes} needs --dist-init-addr HOST:PORT (rank 0's internal IP)",
        )
    parts = sa.dist_init_addr.split(":")
    if len(parts) != 2:
        kind = "too many values to unpack (expected 2)" if len(parts) > 2 else "not enough values to unpack (expected 2, got 1)"
        raise ArgsError(
            f"ValueError: {kind}",
            f"--dist-init-addr {sa.dist_init_addr!r} must be HOST:PORT with exactly one ':' (an IPv4 address and a port)",
        )
    host, port_s = parts
    try:
        port = int(port_s)
    except ValueError:
        raise ArgsError(
            f"ValueError: invalid literal for int() with base 10: {port_s!r}",
            f"--dist-init-addr {sa.dist_init_addr!r}: the port is not an integer",
        ) from None
    if port < 1 or port + 6 > 65535:
        raise ArgsError(
            "zmq.error.ZMQError: Invalid argument",
            f"--dist-init-addr port {port}: ports {port}..{port + 6} must all lie in 1..65535",
        )
    return host, port
