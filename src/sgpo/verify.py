"""Run a verifier (an import path "module:function" taking (response, reference) -> float) so
that it can never take the run down: an exception, a bad reward or a timeout scores 0 and is
counted.

A bad reference answer is bad data, not a wrong response: for the built-in verifiers that can
tell (sgpo.verifiers.REFERENCE_CHECKS: numeric, multiple_choice) every reference is checked in
this process before its first scoring (Verifier.check_references checks a whole task up front),
and one that cannot be used stops the run with a BadReference (a DataError) naming the query and
the field 'answer'. User verifiers are not second-guessed: whatever they raise scores 0.

The reward contract: a real number (bool, int, float, numpy scalar), finite, inside the
verifier's reward range ([0, 1] unless declared); a declared range is rescaled to [0, 1]. Anything
else (a string "1", NaN, inf, 2.0) is a verifier error.

Isolation:
- inline: called in this process. For trusted code: SIGALRM interrupts Python code at the
  timeout; an answer that comes late anyway (C code, a verifier that swallows the interrupt)
  scores 0 as a timeout. Nothing in the process can stop C code holding the interpreter or a
  verifier that catches every interrupt, so those end the process with a stack dump: a
  swallower max(timeout, 5 s) after its timeout, C code at that much CPU time.
- process: a separate worker process (crash isolation only: memory and CPU limits, killed at
  the timeout, but it has this user's files, network and environment).
- sandbox: the same worker inside bubblewrap (sgpo.sandbox): no network, no files but the
  Python installation and sys.path read-only, an empty environment, its own PID namespace, and
  (run as a user other than root, Linux 5.14+) at most sandbox.MAX_TASKS processes and threads.
"""

from __future__ import annotations

import codecs
import contextlib
import faulthandler
import functools
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import math
import numbers
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sgpo import sandbox
from sgpo.config import MAX_VERIFIER_TIMEOUT_S
from sgpo.core.rewards import EQUAL_REWARDS_STD, rescale
from sgpo.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sgpo.tasks import TaskData

log = logging.getLogger("sgpo.verify")
MAX_LOGGED = 5
WORKER_MEMORY_BYTES = 2 * 1024**3
# A backstop for the worker's whole life; each call is bounded by the wall-clock timeout.
WORKER_CPU_SECONDS = 3600
# A fresh worker's start-up (Python and the verifier's imports), timed apart from the calls.
STARTUP_TIMEOUT_S = 60.0
# After the timeout an inline verifier is interrupted again every this many seconds.
INLINE_REINTERRUPT_S = 0.05
# An inline verifier still running max(timeout, this) after its timeout ends the process.
INLINE_HARD_GRACE_S = 5.0
MAX_MESSAGE_BYTES = 1024**2
# What a worker's verifier may print, relayed to sgpo's stderr a line at a time with a prefix
# (never the terminal's control codes); beyond this much a worker's output is dropped.
MAX_RELAYED_BYTES = 64 * 1024
RELAY_PREFIX = "verifier| "
ISOLATIONS = ("inline", "process", "sandbox")

VerifyFn = Callable[[str, str], float]


@contextmanager
def working_directory_importable() -> Iterator[None]:
    """The working directory on sys.path (last, never shadowing an installed package) while a
    user's verifier module is found or imported, as under `python -m sgpo` (task.verifier:
    mychecks:score beside the config); not for longer, so that no other import finds a module
    planted there (transformers probes optional packages: torch_npu, flash_attn)."""
    cwd = os.getcwd()
    added = "" not in sys.path and cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_verifier(spec: str) -> VerifyFn:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"verifier {spec!r} must be an import path like 'package.module:function'")
    try:
        with working_directory_importable():
            fn = getattr(importlib.import_module(module_name), attr)
    except Exception as e:  # whatever the module raises as it is imported (a SyntaxError too)
        raise ValueError(f"cannot import verifier {spec!r}: {type(e).__name__}: {e}") from e
    if not callable(fn):
        raise ValueError(f"verifier {spec!r} is not callable")
    return fn


def verifier_code_sha256(spec: str) -> str | None:
    """sha256 of the file that defines a user's verifier module: an edited verifier scores
    otherwise, so work it scored (a profile's chunks, a checkpoint's steps) is not continued
    under it. None for sgpo's own verifiers (they change with sgpo's version, which would
    refuse every profile made before an upgrade) and when no file is found (a verifier that
    does not import is refused where it is built). What the module imports is not covered."""
    origin = verifier_file(spec)
    if origin is None:
        return None
    with open(origin, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def verifier_file(spec: str) -> str | None:
    """The file that defines a user's verifier module, found without importing it (a worker
    isolation's untrusted code runs only there); None for sgpo's own and when none is found."""
    module_name = spec.partition(":")[0]
    parts = module_name.split(".")
    if parts[0] == "sgpo" or not all(parts):
        return None
    try:
        # the top level through every finder (an editable install's too), without importing it
        with working_directory_importable():
            found = importlib.util.find_spec(parts[0])
        for depth in range(2, len(parts) + 1):
            if found is None or found.submodule_search_locations is None:
                return None
            locations = list(found.submodule_search_locations)
            found = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]), locations)
    except (ImportError, ValueError):
        return None
    origin = found.origin if found is not None else None
    return origin if origin and os.path.isfile(origin) else None


class BadReward(ValueError):
    pass


class BadReference(DataError):
    """A reference answer the verifier cannot use (no number for numeric, no letter for
    multiple_choice): a data error that stops the run, never a score of 0."""


BUILTIN_MODULE = "sgpo.verifiers"


def reference_check(spec: str) -> Callable[[str], object] | None:
    """The check a built-in verifier has for its references (raises BadReference), or None."""
    module_name, _, attr = spec.partition(":")
    if module_name != BUILTIN_MODULE:
        return None
    from sgpo.verifiers import REFERENCE_CHECKS  # it imports this module: imported late

    return REFERENCE_CHECKS.get(attr)


def reward_number(value: object) -> float:
    """The verifier's return value as a float, if it is a real number or a bool, NumPy's
    included (a string is not)."""
    if isinstance(value, np.bool_):
        return float(value)  # np.isclose(...) and the like: not a numbers.Real
    if not isinstance(value, numbers.Real):
        raise BadReward(f"returned {type(value).__name__} {printable(value)[:40]!r}, not a number")
    return float(value)


def shown_output(text: str) -> str:
    """A worker's printed text made safe for a terminal and a log: every control character but
    newline and tab shown as U+FFFD."""
    return "".join(c if c in "\n\t" or c.isprintable() else "\ufffd" for c in text)


def printable(value: object) -> str:
    """str(value), or a stand-in when its __str__ fails (it must not escape the counting)."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - any failure of a user's __str__
        return f"<unprintable {type(value).__name__}>"


def check_reward(value: object, reward_range: tuple[float, float]) -> float:
    """The reward rescaled from reward_range to [0, 1]; BadReward if it breaks the contract.
    A reward outside the range by float rounding alone (1.0000000000000002) is its bound."""
    score = reward_number(value)
    rescaled = rescale(score, reward_range)  # an infinite or NaN reward fails the bounds too
    if not -EQUAL_REWARDS_STD <= rescaled <= 1 + EQUAL_REWARDS_STD:
        low, high = reward_range
        raise BadReward(f"returned {score}, outside the reward range [{low}, {high}]")
    return min(max(rescaled, 0.0), 1.0)


MAX_NOTE_CHARS = 500  # of one logged error's text


@dataclass
class VerifierStats:
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    logged: list[str] = field(default_factory=list)

    def counts(self) -> tuple[int, int, int]:
        return self.calls, self.errors, self.timeouts

    def since(self, before: tuple[int, int, int]) -> tuple[int, int, int]:
        """(calls, errors, timeouts) made since counts() returned `before`."""
        now = self.counts()
        return now[0] - before[0], now[1] - before[1], now[2] - before[2]

    def stop_if_every_call_failed(self, spec: str, since: tuple[int, int, int], on: str) -> None:
        """DataError when every call since `since` (counts()) raised or timed out: a broken
        verifier (a wrong signature, a missing dependency) scores every response 0, and a
        run on it would learn nothing or drop every query as never solved."""
        stop_if_every_call_failed(spec, self.since(since), on)

    def note(self, kind: str, query_id: str, detail: str) -> None:
        if len(self.logged) < MAX_LOGGED:
            # an error's text may quote the response: no terminal control codes, no flood
            detail = shown_output(detail)
            if len(detail) > MAX_NOTE_CHARS:
                detail = detail[:MAX_NOTE_CHARS] + f"... ({len(detail)} characters)"
            message = f"verifier {kind} on query {query_id}: {detail}"
            self.logged.append(message)
            log.warning(message)


def stop_if_every_call_failed(spec: str, made: tuple[int, int, int], on: str) -> None:
    """DataError when every call counted in `made` (calls, errors, timeouts) raised or timed
    out, as VerifierStats.stop_if_every_call_failed (for counts summed over several scorers,
    e.g. processes)."""
    calls, errors, timeouts = made
    if calls and errors + timeouts == calls:
        raise DataError(
            f"verifier {spec!r}: all {calls} calls on {on} failed ({errors} raised or "
            f"returned no reward in range, {timeouts} timed out); the first errors are "
            "logged above. Either the verifier is broken "
            "(a wrong signature, a missing dependency) or it raises on every response this "
            "model gives (return 0 for an answer it cannot parse): fix it (task.verifier) "
            "and run again"
        )


# Where a config names its verifier and the verifier's keywords, for messages
CONFIG_SETTINGS = ("task.verifier", "task.verifier_kwargs")


def check_kwargs(
    fn: Callable, kwargs: dict, spec: str, settings: tuple[str, str] = CONFIG_SETTINGS
) -> None:
    """ConfigError when the verifier cannot be called as (response, reference, **kwargs): a
    misspelt keyword would otherwise make every call raise. settings: where the user named
    the verifier and gave the keywords, for the message."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read: the first call will tell
        return
    try:
        signature.bind("response", "reference", **kwargs)
    except TypeError as e:
        called = f"{settings[1]} {kwargs}: verifier {spec!r} is not called so"
        if not _binds(signature):  # the signature itself is wrong, whatever the keywords
            called = f"{settings[0]} {spec!r} cannot be called as (response, reference)"
        raise ConfigError(f"{called} ({e}); its signature is {fn.__name__}{signature}") from e


def _binds(signature: inspect.Signature) -> bool:
    try:
        signature.bind("response", "reference")
    except TypeError:
        return False
    return True


class VerifierTimeout(BaseException):
    """A BaseException so that a verifier's own `except Exception` cannot swallow the timeout."""


class WorkerDied(RuntimeError):
    pass


class WorkerReportedError(RuntimeError):
    """The verifier raised inside the worker; the worker itself is fine."""


@functools.cache
def _register_cpu_hard_stop() -> None:
    """SIGVTALRM (the CPU-time timer) prints every thread's stack, then ends the process."""
    # The process's real stderr: sys.stderr may be a stream without a file descriptor (Jupyter,
    # typer's CliRunner), which faulthandler cannot write to.
    faulthandler.register(signal.SIGVTALRM, file=sys.__stderr__, all_threads=True, chain=True)


class Verifier:
    def __init__(
        self,
        spec: str,
        timeout_s: float = 5.0,
        isolation: str = "inline",
        kwargs: dict | None = None,
        reward_range: tuple[float, float] = (0.0, 1.0),
        settings: tuple[str, str] = CONFIG_SETTINGS,
    ) -> None:
        """settings: where the user named the verifier and gave kwargs, named in the refusal
        of a verifier that cannot be called with them."""
        if isolation not in ISOLATIONS:
            raise ValueError(f"verifier isolation must be one of {ISOLATIONS}, got {isolation!r}")
        if not 0 < timeout_s <= MAX_VERIFIER_TIMEOUT_S:  # the OS timers refuse far larger ones
            raise ValueError(
                f"verifier timeout must be in (0, {MAX_VERIFIER_TIMEOUT_S:g}] seconds, got "
                f"{timeout_s!r}"
            )
        low, high = reward_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"reward range must be finite with low < high, got {reward_range}")
        self.spec = spec
        self.timeout_s = timeout_s
        self.isolation = isolation
        self.kwargs = dict(kwargs or {})
        self.reward_range = (float(low), float(high))
        self.stats = VerifierStats()
        self._fn: VerifyFn | None = None
        self._worker: _Worker | None = None
        # Trusted code of sgpo's own, run here whatever the isolation.
        self._reference_check = reference_check(spec)
        self._good_references: set[str] = set()
        # Fail fast on a bad path, in every mode. The worker modes import it in the worker only:
        # importing untrusted code here would run it outside the sandbox.
        if isolation == "inline":
            self._fn = import_verifier(spec)
            check_kwargs(self._fn, self.kwargs, spec, settings)
        else:
            if spec.startswith("sgpo."):  # sgpo's own, trusted: its signature read here
                check_kwargs(import_verifier(spec), self.kwargs, spec, settings)
            self._worker = self._start_worker()
            try:
                self._worker.wait_ready()
            except Exception as e:
                self.close()
                raise ValueError(f"verifier {spec!r} does not start ({isolation}): {e}") from e

    def check_reference(self, reference: str, where: str, field: str = "answer") -> None:
        """BadReference naming `where` and the reference's field when the verifier cannot use
        this reference; nothing for a verifier with no reference check."""
        if self._reference_check is None or reference in self._good_references:
            return
        try:
            self._reference_check(reference)
        except BadReference as e:
            raise BadReference(
                f"{where}: field {field!r}: verifier {self.spec} cannot score against this "
                f"reference: {e}. Fix or remove the row"
            ) from e
        self._good_references.add(reference)

    def check_references(self, task: TaskData) -> None:
        """Every reference of both splits, before any compute is spent: the first bad one is a
        BadReference naming the file (or split), the row and the answer's field."""
        from sgpo.tasks import row_label

        for label, queries in ((task.train_label, task.train), (task.eval_label, task.eval)):
            for row, q in enumerate(queries):
                where = row_label(label, row, q.line, q.query_id)
                self.check_reference(q.answer, where, task.answer_field)

    def score(
        self, responses: list[str], references: list[str], query_ids: list[str]
    ) -> list[float]:
        return [
            self.score_one(r, ref, q)
            for r, ref, q in zip(responses, references, query_ids, strict=True)
        ]

    def score_one(self, response: str, reference: str, query_id: str) -> float:
        """The response's reward in [0, 1]; a failure caused by the response (or by a user
        verifier) scores 0 and is counted. A reference a built-in verifier cannot use raises
        BadReference: bad data stops the run."""
        self.check_reference(reference, f"query {query_id!r}")
        self.stats.calls += 1
        try:
            if self._fn is not None:
                raw: object = self._inline_call(response, reference)
            else:
                raw = self._worker_call(response, reference)
            return check_reward(raw, self.reward_range)
        except VerifierTimeout:
            self.stats.timeouts += 1
            self.stats.note("timeout", query_id, f"no answer within {self.timeout_s}s")
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - sys.exit() in a verifier scores 0 too
            self.stats.errors += 1
            self.stats.note("error", query_id, f"{type(e).__name__}: {printable(e)}")
        return 0.0

    def _inline_call(self, response: str, reference: str) -> object:
        assert self._fn is not None
        start = time.monotonic()
        if threading.current_thread() is not threading.main_thread():
            # No signals off the main thread: not interrupted, only judged late below. Its
            # prints are left where they go: sys.stdout is the whole process's to redirect.
            value = self._fn(response, reference, **self.kwargs)
        else:
            # what a verifier prints goes where the worker isolations send it, to stderr: not
            # into a command's result on stdout (sgpo eval | jq)
            with contextlib.redirect_stdout(sys.stderr):
                value = self._alarmed_call(response, reference)
        if time.monotonic() - start > self.timeout_s:
            raise VerifierTimeout  # it swallowed the interrupt or sat in C code: a late answer
        return value

    def _alarmed_call(self, response: str, reference: str) -> object:
        assert self._fn is not None
        hard_deadline = max(self.timeout_s, INLINE_HARD_GRACE_S)
        hard_stop_armed = False
        finished = False

        def on_alarm(signum: int, frame: object) -> None:
            nonlocal hard_stop_armed
            if finished:  # the verifier has returned: disarming, nothing left to interrupt
                return
            if not hard_stop_armed:
                # A verifier that catches the timeout gets this long before faulthandler's
                # watchdog thread (no interpreter lock needed) dumps the stack and exits.
                faulthandler.dump_traceback_later(hard_deadline, exit=True, file=sys.__stderr__)
                hard_stop_armed = True
            raise VerifierTimeout

        _register_cpu_hard_stop()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        # The interval re-raises the timeout in a verifier that caught it. The CPU-time timer
        # stops C code that never returns to Python (where SIGALRM's handler cannot run).
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s, INLINE_REINTERRUPT_S)
        signal.setitimer(signal.ITIMER_VIRTUAL, self.timeout_s + hard_deadline)
        try:
            return self._fn(response, reference, **self.kwargs)
        finally:
            while True:  # an alarm between the return and `finished` must not skip the disarming
                try:
                    finished = True
                    signal.setitimer(signal.ITIMER_VIRTUAL, 0)
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous)
                    if hard_stop_armed:
                        faulthandler.cancel_dump_traceback_later()
                    break
                except VerifierTimeout:  # the late answer is judged in _inline_call
                    continue

    def _start_worker(self) -> _Worker:
        limits = {
            "RLIMIT_AS": WORKER_MEMORY_BYTES,
            "RLIMIT_CPU": WORKER_CPU_SECONDS,
            "RLIMIT_CORE": 0,
        }
        if self.isolation == "sandbox":
            limits |= sandbox.task_limit()
        inner = [sys.executable, "-m", "sgpo.verifier_worker", self.spec]
        inner += [json.dumps(self.kwargs), json.dumps(limits)]
        if self.isolation == "process":
            python_path = [entry or os.getcwd() for entry in sys.path]
            return _Worker(inner, dict(os.environ, PYTHONPATH=os.pathsep.join(python_path)))
        reason = sandbox.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"no sandbox: {reason}")
        # bwrap itself starts with no more than PATH: --clearenv clears the worker's, while
        # bwrap's init process, pid 1 in the sandbox, keeps what it was started with
        bare = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        return _Worker(sandbox.sandbox_command([*inner, "--sandboxed"], self.spec), env=bare)

    def _worker_call(self, response: str, reference: str) -> object:
        if self._worker is None:
            self._worker = self._start_worker()
        try:
            self._worker.wait_ready()
            return self._worker.call(response, reference, self.timeout_s)
        except WorkerReportedError:
            raise
        except BaseException:
            # A worker in an unknown state is replaced; the new one starts up now, before the
            # next call, and its start-up is not counted against that call's timeout.
            self._worker.kill()
            self._worker = self._start_worker()
            raise

    def close(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None


def _kill_worker(process: subprocess.Popen, owner: int) -> None:
    """Kill a worker's process group (its children too) and reap it; not from a fork of its
    owner, whose exit would otherwise take the owner's worker along."""
    if os.getpid() != owner:
        return
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


class _Worker:
    """A verifier_worker process (bare or inside bwrap) spoken to in JSON lines over pipes."""

    def __init__(self, command: list[str], env: dict | None) -> None:
        # Its own session: killing the process group takes the worker's children along, and a
        # Ctrl-C in the terminal reaches only sgpo.
        # Its stderr is a pipe sgpo relays, not sgpo's own: a verifier handed the real one
        # could truncate, forge or flood the user's log.
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.relayed = 0  # bytes of its output relayed so far
        self.stderr_open = True
        self._line_begun = False
        # one decoder for the stream: a character split between two reads stays one
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # killed when closed, or else once nothing holds the worker or Python exits: a run that
        # failed before it closed its verifier (a model that did not load, a refused resume)
        # must not leave the process behind
        self._finalizer = weakref.finalize(self, _kill_worker, self.process, os.getpid())
        self.ready = False
        self._pending = b""

    def wait_ready(self) -> None:
        if self.ready:
            return
        message = self._receive(time.monotonic() + STARTUP_TIMEOUT_S, "start up")
        if "error" in message:
            raise RuntimeError(str(message["error"]))
        self.ready = True

    def call(self, response: str, reference: str, timeout_s: float) -> object:
        deadline = time.monotonic() + timeout_s
        line = json.dumps({"response": response, "reference": reference}) + "\n"
        self._send(line.encode(), deadline)
        message = self._receive(deadline, "answer")
        if "error" in message:
            raise WorkerReportedError(str(message["error"]))
        if "score" not in message:
            raise WorkerDied(f"verifier worker sent {str(message)[:80]!r}")
        return message["score"]

    def _send(self, data: bytes, deadline: float) -> None:
        assert self.process.stdin is not None
        fd = self.process.stdin.fileno()
        while data:  # a long response may not fit the pipe: a worker that stops reading times out
            if not select.select([], [fd], [], max(0.0, deadline - time.monotonic()))[1]:
                raise VerifierTimeout
            try:
                data = data[os.write(fd, data[: select.PIPE_BUF]) :]
            except (BrokenPipeError, ConnectionResetError) as e:
                raise self._died() from e

    def _receive(self, deadline: float, what: str) -> dict:
        assert self.process.stdout is not None and self.process.stderr is not None
        fd, err = self.process.stdout.fileno(), self.process.stderr.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            watched = [fd, err] if self.stderr_open else [fd]  # a closed stderr is always ready
            ready = select.select(watched, [], [], remaining)[0] if remaining > 0 else []
            if not ready:
                if what == "start up":
                    raise RuntimeError(f"no start within {STARTUP_TIMEOUT_S}s")
                raise VerifierTimeout
            if err in ready:
                self._relay(os.read(err, 65536))
            if fd not in ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise self._died()
            self._pending += chunk
            if len(self._pending) > MAX_MESSAGE_BYTES:
                raise WorkerDied("verifier worker sent an over-long message")
        self._drain()  # the worker prints before it answers: what it printed is in the pipe
        line, _, self._pending = self._pending.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError as e:
            raise WorkerDied(f"verifier worker sent {line[:80]!r}") from e
        if not isinstance(message, dict):
            raise WorkerDied(f"verifier worker sent {line[:80]!r}")
        return message

    def _relay(self, data: bytes) -> None:
        """What the worker printed, to sgpo's stderr: each line after RELAY_PREFIX, control
        codes shown as U+FFFD, at most MAX_RELAYED_BYTES in all; at the pipe's end (no data),
        stderr_open goes False."""
        if not data:
            self.stderr_open = False
            return
        room = max(MAX_RELAYED_BYTES - self.relayed, 0)
        said_dropped = self.relayed > MAX_RELAYED_BYTES
        self.relayed += len(data)
        text = self._decoder.decode(data[:room])
        if self.relayed > MAX_RELAYED_BYTES and not said_dropped:
            text += f"\n[more than {MAX_RELAYED_BYTES} bytes printed: the rest is dropped]\n"
        self._show(text)

    def _show(self, text: str) -> None:
        """Printed text to sgpo's stderr, each line it begins marked with RELAY_PREFIX."""
        pieces = []
        for line in shown_output(text).splitlines(keepends=True):  # only "\n" splits now
            pieces.append(line if self._line_begun else RELAY_PREFIX + line)
            self._line_begun = not line.endswith("\n")
        self._write("".join(pieces))

    def _end_line(self) -> None:
        """A line the worker left open is ended (a character it left half-written shown as
        U+FFFD): sgpo's next line, or the worker's next print, must not run on from it."""
        self._show(self._decoder.decode(b"", final=True))
        if self._line_begun:
            self._line_begun = False
            self._write("\n")

    @staticmethod
    def _write(text: str) -> None:
        # a closed or missing stderr (`2>&1 | head` ended) must not fail the verifier's call
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.write(text)
            sys.stderr.flush()

    def _drain(self) -> None:
        """Relay what the worker's stderr holds now, a message's worth at most (a child it
        left writing must not hold sgpo here), and end a line it left open."""
        assert self.process.stderr is not None
        err, read = self.process.stderr.fileno(), 0
        while self.stderr_open and read < MAX_MESSAGE_BYTES and select.select([err], [], [], 0)[0]:
            chunk = os.read(err, 65536)
            self._relay(chunk)  # an empty chunk (the pipe's end) closes it: the loop ends
            read += len(chunk)
        self._end_line()

    def _died(self) -> WorkerDied:
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        self._drain()  # its last words (bwrap's own errors among them)
        return WorkerDied(f"verifier worker died (exit code {code})")

    def kill(self) -> None:
        try:
            if self._finalizer.alive:
                self._drain()  # what it printed before it hung or was closed
        finally:
            self._finalizer()  # once: a later call, or the finalizer's own, does nothing
