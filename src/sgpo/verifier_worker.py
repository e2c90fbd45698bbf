"""A verifier worker: `python -m sgpo.verifier_worker SPEC KWARGS_JSON LIMITS_JSON`.

Started by sgpo.verify for isolation "process" and (inside bubblewrap) "sandbox". It speaks JSON
lines: it first answers {"ready": true} or {"error": ...}, then reads {"response", "reference"}
per line and answers {"score": float} or {"error": "Type: message"}. JSON, not pickle: the
parent must never execute what an untrusted worker sends back.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def _set_limits(limits: dict[str, int]) -> None:
    # Soft and hard: without CAP_SYS_RESOURCE the verifier cannot raise them again.
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def main() -> None:
    spec, kwargs_json, limits_json = sys.argv[1:4]
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
        send(message)


if __name__ == "__main__":
    main()
