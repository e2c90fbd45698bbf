"""Verifiers that attack the machine they run on (issue 13.3). Each returns 1.0 if its attack
got through and raises otherwise; its parameters come as JSON in the reference.

Imported by module name ("attack_verifiers:raw_socket") like bad_verifiers.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def raw_socket(response: str, reference: str) -> float:
    """_socket, underneath any patch of the socket module."""
    import _socket

    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(("127.0.0.1", json.loads(reference)["port"]))
    s.close()
    return 1.0


def reloaded_socket(response: str, reference: str) -> float:
    importlib.reload(socket)
    with socket.create_connection(("127.0.0.1", json.loads(reference)["port"]), timeout=2):
        return 1.0


def subprocess_socket(response: str, reference: str) -> float:
    port = json.loads(reference)["port"]
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=10, capture_output=True)
    return 1.0


def udp_datagram(response: str, reference: str) -> float:
    """A DNS-style datagram to a resolver on the host (the way data leaks through DNS)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"\x12\x34 exfiltrated", ("127.0.0.1", json.loads(reference)["port"]))
    s.close()
    return 1.0


def resolve_name(response: str, reference: str) -> float:
    socket.getaddrinfo("localhost", 80)
    return 1.0


def write_file(response: str, reference: str) -> float:
    """Writes (or rewrites) a file outside: a stray file, or a run's summary.json."""
    Path(json.loads(reference)["path"]).write_text('{"final_eval_acc": 0.999}')
    return 1.0


def env_secret(response: str, reference: str) -> float:
    if "SGPO_TEST_SECRET" not in os.environ:
        raise LookupError("no secret in the environment")
    return 1.0


def env_secret_of_any_process(response: str, reference: str) -> float:
    """The secret in any visible process's environment: bwrap's own init (pid 1 in the
    sandbox) kept the environment it was started with."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if b"SGPO_TEST_SECRET=" in environ.read_bytes():
                return 1.0
        except OSError:
            continue
    raise LookupError("no secret in any process's environment")


def read_file(response: str, reference: str) -> float:
    """Reads a file such as ~/.ssh/id_rsa (its path in the reference: HOME differs in here)."""
    Path(json.loads(reference)["path"]).read_text()
    return 1.0


def fork_survivor(response: str, reference: str) -> float:
    """Starts a detached child (its own session) that would outlive the worker."""
    subprocess.Popen(
        ["sleep", json.loads(reference)["seconds"]],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return 1.0


def see_host_processes(response: str, reference: str) -> float:
    """Finds the test's own process (the host's PIDs) under /proc."""
    if not Path(f"/proc/{json.loads(reference)['pid']}").exists():
        raise LookupError("host process not visible")
    return 1.0


def fill_tmp(response: str, reference: str) -> float:
    """Writes 100 MB to /tmp, or to the directory the reference names."""
    directory = json.loads(reference).get("directory", "/tmp")  # noqa: S108
    path = os.path.join(directory, "sgpo-fill")
    with open(path, "wb") as out:  # the attack under test
        try:
            for _ in range(100):
                out.write(b"\0" * 1024**2)
                out.flush()
        finally:
            os.unlink(path)
    return 1.0


def fork_bomb(response: str, reference: str) -> float:
    """Forks the number of children the reference names (each sleeps, then exits); all reaped."""
    children: list[int] = []
    try:
        for _ in range(json.loads(reference)["children"]):
            pid = os.fork()  # the attack under test: an OSError once a limit stops it
            if pid == 0:
                time.sleep(10)
                os._exit(0)
            children.append(pid)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return 1.0


def forge_log(response: str, reference: str) -> float:
    """Truncates the stderr it was given (sgpo's log, were it handed sgpo's own), then writes a
    forged line with a terminal escape code and floods it; succeeds if the truncation did."""
    os.write(2, b"\x1b]0;pwned\x07FORGED sgpo: all good\n" + b"x" * json.loads(reference)["flood"])
    os.ftruncate(2, 0)  # an OSError on a pipe: blocked
    return 1.0


def open_line(response: str, reference: str) -> float:
    """Leaves its line open, with an "é" split between two writes; to run on unmarked into
    sgpo's next line, or its own next print."""
    os.write(2, b"half a line \xc3")
    time.sleep(0.05)
    os.write(2, b"\xa9")
    return 1.0


def cut_character(response: str, reference: str) -> float:
    """Ends its call half-way through a character."""
    os.write(2, b"cut \xc3")
    return 1.0


def raises_quoting_the_response(response: str, reference: str) -> float:
    """An error whose text quotes a response that holds terminal control codes, at length."""
    raise ValueError("bad answer: " + response)
