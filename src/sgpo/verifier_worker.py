"""A verifier worker: `python -m sgpo.verifier_worker SPEC KWARGS_JSON LIMITS_JSON [--sandboxed]`.

Started by sgpo.verify for isolation "process" and (inside bubblewrap, --sandboxed) "sandbox".
It speaks JSON lines: it first answers {"ready": true} or {"error": ...}, then reads
{"response", "reference"} per line and answers {"score": float} or {"error": "Type: message"}.
JSON, not pickle: the parent must never execute what an untrusted worker sends back. Sandboxed,
it kills every process of its PID namespace a call started once the call is answered (what ran
when the verifier was imported, bwrap's init and the worker itself aside), so nothing a call
started runs on, using CPU or memory, into the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys


def _set_limits(limits: dict[str, int]) -> None:
    # Soft and hard: without CAP_SYS_RESOURCE the verifier cannot raise them again.
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _parent(pid: int) -> int:
    """pid's parent, from /proc (0 once past the namespace's init, or if pid is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def running() -> set[int]:
    """The processes of the PID namespace, from /proc."""
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def kill_the_others(resident: set[int]) -> None:
    """SIGKILL every process of the sandbox's PID namespace but this one, its ancestors and
    the `resident` ones (those running when the verifier was imported: helpers it keeps),
    again until none is left (a fork bomb forks while it is killed); reap this one's own."""
    ancestors, pid = set(), os.getpid()
    while pid > 0 and pid not in ancestors:
        ancestors.add(pid)
        pid = _parent(pid)
    keep = resident | ancestors
    for _ in range(100):
        others = [p for p in running() if p not in keep]
        if not others:
            break
        for pid in others:
            with contextlib.suppress(OSError):  # gone already
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # none of its own left to reap
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass


def main() -> None:
    spec, kwargs_json, limits_json = sys.argv[1:4]
    sandboxed = sys.argv[4:] == ["--sandboxed"]
    # The protocol gets a private copy of stdout; the verifier's own prints go to stderr.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    from sgpo.verify import import_verifier, printable, reward_number

    try:
        _set_limits(json.loads(limits_json))
        fn = import_verifier(spec)
        kwargs = json.loads(kwargs_json)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which refuses the spec
        send({"error": f"{type(e).__name__}: {e}"})
        return
    resident = running() if sandboxed else set()  # the helpers its import started stay
    send({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            message = {
                "score": reward_number(fn(request["response"], request["reference"], **kwargs))
            }
        except BaseException as e:  # noqa: BLE001 - sys.exit() too: the worker lives on
            message = {"error": f"{type(e).__name__}: {printable(e)}"}
        # what the verifier printed, out before its answer: buffered, it would reach stderr or
        # not depending on whether the worker flushed before it was killed
        sys.stdout.flush()
        if sandboxed:
            kill_the_others(resident)
        send(message)


if __name__ == "__main__":
    main()
