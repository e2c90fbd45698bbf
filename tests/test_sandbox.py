"""Attacks on the verifier sandbox (issue 13.3), each run twice: with isolation "process", where
it gets through (crash isolation only: this shows the attack is real), and with "sandbox", where
it must not. Skipped, with the reason, where bubblewrap cannot run."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgpo import sandbox, verify
from sgpo.verify import (
    MAX_NOTE_CHARS,
    MAX_RELAYED_BYTES,
    RELAY_PREFIX,
    Verifier,
    VerifierStats,
)

TESTS_DIR = str(Path(__file__).parent)
NO_SANDBOX = sandbox.unavailable_reason()
ISOLATIONS = [
    "process",
    pytest.param(
        "sandbox",
        marks=pytest.mark.skipif(NO_SANDBOX is not None, reason=f"no sandbox: {NO_SANDBOX}"),
    ),
]


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.syspath_prepend(TESTS_DIR)  # attack_verifiers, for the worker's sys.path
    return request.param


def attack(name: str, isolation: str, **params: object) -> bool:
    """True if the attack got through (scored 1); a blocked one must be a counted error."""
    v = Verifier(f"attack_verifiers:{name}", timeout_s=15.0, isolation=isolation)
    try:
        score = v.score_one("", json.dumps(params), name)
    finally:
        v.close()
    stats: VerifierStats = v.stats
    assert score in (0.0, 1.0)
    assert (stats.errors, stats.timeouts) == (0 if score else 1, 0), stats.logged
    return score == 1.0


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    """A listener on the host's loopback, started by the test, closed after it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(1.0)
        yield listener


def was_reached(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        return False
    connection.close()
    return True


def test_a_verifier_cannot_rewrite_or_flood_sgpos_log(
    isolation: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Its stderr is a pipe sgpo relays: it cannot truncate sgpo's log, send the terminal
    control codes, pass its lines off as sgpo's, or write more than MAX_RELAYED_BYTES."""
    sys.stderr.write("sgpo's own line, written before\n")
    sys.stderr.flush()
    assert not attack("forge_log", isolation, flood=4 * MAX_RELAYED_BYTES)
    err = capfd.readouterr().err
    assert err.startswith("sgpo's own line, written before\n")
    assert "\x1b" not in err and "\x07" not in err
    assert f"{RELAY_PREFIX}\ufffd]0;pwned\ufffdFORGED sgpo: all good" in err
    assert "\nFORGED" not in err  # every line it printed is marked as the verifier's
    assert len(err) < MAX_RELAYED_BYTES + 1000
    assert f"more than {MAX_RELAYED_BYTES} bytes printed: the rest is dropped" in err


def test_an_errors_text_is_logged_without_control_codes_or_flood(
    isolation: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception's text may quote the response (the policy's output): logged with its
    control codes shown as U+FFFD, and cut to MAX_NOTE_CHARS."""
    v = Verifier("attack_verifiers:raises_quoting_the_response", 15.0, isolation)
    try:
        v.score_one("\x1b]0;PWNED\x07\x1b[2J" + "x" * 100_000, "1", "q1")
    finally:
        v.close()
    (logged,) = v.stats.logged
    assert "\x1b" not in caplog.text and "\x07" not in caplog.text
    assert "bad answer: \ufffd]0;PWNED\ufffd\ufffd[2Jxxx" in logged
    assert len(logged) < MAX_NOTE_CHARS + 200 and logged.endswith(" characters)")


def test_a_line_a_verifier_leaves_open_ends_with_its_call(
    isolation: str, capfd: pytest.CaptureFixture[str]
) -> None:
    v = Verifier("attack_verifiers:open_line", timeout_s=15.0, isolation=isolation)
    try:
        assert v.score_one("", "{}", "q") == 1.0
        sys.stderr.write("sgpo's own line\n")
        sys.stderr.flush()
        assert v.score_one("", "{}", "q") == 1.0
    finally:
        v.close()
    mark = f"{RELAY_PREFIX}half a line \u00e9\n"  # one character, though written in two parts
    assert capfd.readouterr().err == f"{mark}sgpo's own line\n{mark}"
    # a character left half-written ends with its call too, not at the next call's start
    v = Verifier("attack_verifiers:cut_character", timeout_s=15.0, isolation=isolation)
    try:
        assert [v.score_one("", "{}", "q") for _ in range(2)] == [1.0, 1.0]
    finally:
        v.close()
    assert capfd.readouterr().err == f"{RELAY_PREFIX}cut \ufffd\n" * 2


@pytest.mark.parametrize("name", ["raw_socket", "reloaded_socket", "subprocess_socket"])
def test_no_connection_to_a_host_listener(
    isolation: str, name: str, tcp_listener: socket.socket
) -> None:
    port = tcp_listener.getsockname()[1]
    got_through = attack(name, isolation, port=port)
    assert got_through == was_reached(tcp_listener) == (isolation == "process")


def test_no_datagram_reaches_the_host(isolation: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(1.0)
        attack("udp_datagram", isolation, port=receiver.getsockname()[1])
        try:
            received = b"exfiltrated" in receiver.recv(1024)
        except TimeoutError:
            received = False
    assert received == (isolation == "process")


def test_no_name_resolution(isolation: str) -> None:
    assert attack("resolve_name", isolation) == (isolation == "process")


def test_no_file_written_outside(isolation: str, tmp_path: Path) -> None:
    target = tmp_path / "planted.txt"
    assert attack("write_file", isolation, path=str(target)) == (isolation == "process")
    assert target.exists() == (isolation == "process")


def test_run_files_cannot_be_rewritten(isolation: str, tmp_path: Path) -> None:
    summary = tmp_path / "run" / "summary.json"
    summary.parent.mkdir()
    summary.write_text('{"final_eval_acc": 0.375}')
    attack("write_file", isolation, path=str(summary))
    assert ("0.375" in summary.read_text()) == (isolation == "sandbox")


def test_no_environment_secrets(isolation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGPO_TEST_SECRET", "hunter2")
    assert attack("env_secret", isolation) == (isolation == "process")
    # nor in the sandbox's other processes (bwrap's init, pid 1 in there, was started with it)
    assert attack("env_secret_of_any_process", isolation) == (isolation == "process")


def test_no_ssh_key(isolation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    key = home / ".ssh" / "id_rsa"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    assert attack("read_file", isolation, path=str(key)) == (isolation == "process")


def test_no_host_processes_visible(isolation: str) -> None:
    assert attack("see_host_processes", isolation, pid=os.getpid()) == (isolation == "process")


def processes_running(command_line: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == command_line:
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            pass
    return found


def test_children_die_with_the_worker(isolation: str) -> None:
    # A unique duration names the child; it ends by itself within a minute in any case.
    seconds = f"{random.uniform(30, 60):.6f}"
    assert attack("fork_survivor", isolation, seconds=seconds)  # forking itself is allowed
    time.sleep(0.5)
    survivors = processes_running(b"sleep\0" + seconds.encode() + b"\0")
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert bool(survivors) == (isolation == "process")


def test_a_sandboxed_call_leaves_nothing_running_into_the_next(isolation: str) -> None:
    """Sandboxed, what a call started is killed when it answers, not only with the worker:
    a child left spinning would use CPU and memory for the rest of the run."""
    seconds = f"{random.uniform(30, 60):.6f}"
    v = Verifier("attack_verifiers:fork_survivor", timeout_s=15.0, isolation=isolation)
    try:
        assert v.score_one("", json.dumps({"seconds": seconds}), "q") == 1.0
        time.sleep(0.5)
        running = processes_running(b"sleep\0" + seconds.encode() + b"\0")
        assert v.score_one("", json.dumps({"seconds": "1"}), "q") == 1.0  # the worker lives on
    finally:
        v.close()
        for pid in processes_running(b"sleep\0" + seconds.encode() + b"\0"):
            os.kill(pid, signal.SIGKILL)
    assert bool(running) == (isolation == "process")


def test_a_helper_the_verifier_starts_as_it_is_imported_stays(isolation: str) -> None:
    v = Verifier("helper_verifier:echo", timeout_s=15.0, isolation=isolation)
    try:
        assert [v.score_one("", f"ref{i}", "q") for i in range(3)] == [1.0, 1.0, 1.0]
    finally:
        v.close()
    assert (v.stats.errors, v.stats.timeouts) == (0, 0)


@pytest.mark.skipif(
    not sandbox.task_limit(),
    reason="the kernel does not count the sandbox's tasks here (sgpo run as root, or Linux < 5.14)",
)
def test_a_fork_bomb_stops_at_the_task_limit(isolation: str) -> None:
    children = sandbox.MAX_TASKS + 50
    assert attack("fork_bomb", isolation, children=children) == (isolation == "process")


@pytest.mark.parametrize(
    ("euid", "release", "limited"),
    [
        (1000, "6.1.0-18-amd64", True),
        (1000, "5.14.0", True),
        (1000, "5.4.0-150-generic", False),
        (0, "6.18.44", False),
        (1000, "unknown", False),
    ],
)
def test_the_task_limit_is_set_only_where_the_kernel_counts_the_sandbox_alone(
    euid: int, release: str, limited: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: euid)
    monkeypatch.setattr(sandbox.platform, "release", lambda: release)
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    assert sandbox.task_limit() == ({"RLIMIT_NPROC": sandbox.MAX_TASKS} if limited else {})


def test_a_setuid_bwrap_gets_no_task_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a setuid bwrap may not make a user namespace: the host user's every task would count
    bwrap = tmp_path / "bwrap"
    bwrap.write_bytes(b"")
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox.platform, "release", lambda: "6.1.0")
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: str(bwrap))
    bwrap.chmod(0o755)
    assert sandbox.task_limit() == {"RLIMIT_NPROC": sandbox.MAX_TASKS}
    bwrap.chmod(0o4755)
    assert sandbox.task_limit() == {}


@pytest.mark.skipif(NO_SANDBOX is not None, reason=f"no sandbox: {NO_SANDBOX}")
def test_the_sandboxed_worker_is_given_the_task_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []
    real_command = sandbox.sandbox_command

    def command(inner: list[str], spec: str) -> list[str]:
        commands.append(inner)
        return real_command(inner, spec)

    # a limit the worker's own process and threads fit in (not counted as root anyway)
    monkeypatch.setattr(sandbox, "task_limit", lambda: {"RLIMIT_NPROC": 64})
    monkeypatch.setattr(sandbox, "sandbox_command", command)
    Verifier("sgpo.verifiers:math_verify", timeout_s=5.0, isolation="sandbox").close()
    assert json.loads(commands[0][-2])["RLIMIT_NPROC"] == 64  # before "--sandboxed"


def test_a_process_worker_gets_no_task_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # outside a user namespace RLIMIT_NPROC would count every process of the user
    started: list[list[str]] = []

    class Recorded:
        def __init__(self, command: list[str], env: dict | None) -> None:
            started.append(command)

        def wait_ready(self) -> None:
            pass

        def kill(self) -> None:
            pass

    monkeypatch.setattr(sandbox, "task_limit", lambda: {"RLIMIT_NPROC": 64})
    monkeypatch.setattr(verify, "_Worker", Recorded)
    Verifier("sgpo.verifiers:math_verify", timeout_s=5.0, isolation="process").close()
    assert "RLIMIT_NPROC" not in json.loads(started[0][-1])


@pytest.mark.skipif(NO_SANDBOX is not None, reason=f"no sandbox: {NO_SANDBOX}")
@pytest.mark.parametrize("directory", ["/tmp", "/dev/shm", "/", "/dev"])
def test_no_writable_place_holds_more_than_the_small_tmp(
    directory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sandbox's root and /dev are tmpfs mounts of their own: unbounded unless read-only
    monkeypatch.syspath_prepend(TESTS_DIR)
    assert not attack("fill_tmp", "sandbox", directory=directory)


def test_only_the_verifier_package_of_the_working_directory_is_visible(
    isolation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "mypkg").mkdir(parents=True)
    (project / "mypkg" / "__init__.py").write_text("")
    (project / "mypkg" / "check.py").write_text(
        "from pathlib import Path\n\n\n"
        "def score(response, reference):\n"
        "    Path(reference).read_text()\n"
        "    return 1.0\n"
    )
    secret = project / ".env"
    secret.write_text("API_KEY=hunter2\n")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    v = Verifier("mypkg.check:score", timeout_s=15.0, isolation=isolation)
    try:
        assert v.score_one("", str(project / "mypkg" / "check.py"), "own file") == 1.0
        assert v.score_one("", str(secret), "secret") == (isolation == "process")
    finally:
        v.close()
