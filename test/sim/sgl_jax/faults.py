"""faults.json (key "server") from the sim root; see test/sim/README.md. Missing file = no faults."""

import json
import os

DEFAULTS = {
    "loadDelayMs": 300,
    "crash": None,
    "neverReady": False,
    "wedged": False,
    "slowHealthGenerateMs": 0,
    # Every generation request (and /health_generate's one-token request) takes this long in rank 0's engine,
    # one request after another: a replica at capacity answers 1000/requestTimeMs requests a second, however
    # many wait. Re-read for every batch, like "wedged".
    "requestTimeMs": 0,
    "ignoreSigtermRanks": [],
    "jaxInitTimeoutMs": 300000,
    # XLA's coordination service declares a task dead after heartbeat_timeout = 100 s (openxla/xla
    # xla/pjrt/distributed/client.h; docs/upstream/hostkeys-sglang-facts.md §C); only then do the
    # surviving schedulers exit.
    "jaxHeartbeatTimeoutMs": 100000,
    # /health_generate gives up after SGLANG_HEALTH_CHECK_TIMEOUT (20 s) (sgl_jax/srt/entrypoints/
    # http_server.py HEALTH_CHECK_TIMEOUT); None = that variable, as the real server reads it.
    "healthCheckTimeoutMs": None,
    # Not a fault: run the server under SCHED_IDLE (benchmarks). Every simulated host shares this machine's
    # cores, so the start-up of the servers started first (two Python processes each) would slow the start
    # commands still running on other hosts, which on GCP run on machines of their own. SCHED_IDLE (not nice 19:
    # 64 servers at nice 19 still outweigh a few shells) makes them yield to every host's sshd and shells; on
    # an idle machine nothing changes. Applied by the venv's python (host-bin/uv), before any import; only
    # checked here.
    "cpuIdle": False,
}


class FaultsError(Exception):
    pass


def read_faults():
    root = os.environ.get("TPD_SIM_ROOT")
    out = dict(DEFAULTS)
    if not root:
        return out
    path = os.path.join(root, "faults.json")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return out
    except (OSError, ValueError) as err:
        raise FaultsError(f"cannot read {path}: {err}") from err
    server = data.get("server") if isinstance(data, dict) else None
    if server is None:
        return out
    if not isinstance(server, dict):
        raise FaultsError(f"{path}: \"server\" must be an object")
    for key, value in server.items():
        if key not in DEFAULTS:
            raise FaultsError(f"{path}: unknown server fault {key!r} (known: {', '.join(DEFAULTS)})")
        if value is not None:
            out[key] = value
    crash = out["crash"]
    if crash is not None and not (
        isinstance(crash, dict)
        and isinstance(crash.get("rank"), int)
        and crash.get("when") in ("before-rendezvous", "after-rendezvous", "after-ready")
        and crash.get("how", "exception") in ("exception", "sigkill")
    ):
        raise FaultsError(
            f"{path}: server.crash must be {{\"rank\": int, \"when\": \"before-rendezvous\"|\"after-rendezvous\"|\"after-ready\", "
            "\"how\"?: \"exception\"|\"sigkill\"}}"
        )
    for key in ("loadDelayMs", "slowHealthGenerateMs", "requestTimeMs", "jaxInitTimeoutMs", "jaxHeartbeatTimeoutMs"):
        if not isinstance(out[key], (int, float)) or out[key] < 0:
            raise FaultsError(f"{path}: server.{key} must be a non-negative number")
    if not isinstance(out["cpuIdle"], bool):
        raise FaultsError(f"{path}: server.cpuIdle must be true or false")
    hc = out["healthCheckTimeoutMs"]
    if hc is not None and (not isinstance(hc, (int, float)) or hc < 0):
        raise FaultsError(f"{path}: server.healthCheckTimeoutMs must be a non-negative number or null")
    if not isinstance(out["ignoreSigtermRanks"], list):
        raise FaultsError(f"{path}: server.ignoreSigtermRanks must be a list of ranks")
    return out


def crash_due(faults, rank, when):
    crash = faults.get("crash")
    return bool(crash) and crash["rank"] == rank and crash["when"] == when


def health_check_timeout_s(faults):
    """HEALTH_CHECK_TIMEOUT = int(os.getenv("SGLANG_HEALTH_CHECK_TIMEOUT", 20)) (http_server.py)."""
    ms = faults.get("healthCheckTimeoutMs")
    if ms is not None:
        return ms / 1000.0
    return int(os.environ.get("SGLANG_HEALTH_CHECK_TIMEOUT", 20))
