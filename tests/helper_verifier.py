"""A verifier that keeps a helper process, started as it is imported (a REPL, a solver), and
scores by a round trip through it. Imported by module name ("helper_verifier:echo")."""

from __future__ import annotations

import subprocess

HELPER = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def echo(response: str, reference: str) -> float:
    assert HELPER.stdin is not None and HELPER.stdout is not None
    HELPER.stdin.write(reference.encode() + b"\n")
    HELPER.stdin.flush()
    return float(HELPER.stdout.readline().decode().strip() == reference)
