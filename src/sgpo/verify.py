"""Run a verifier (an import path "module:function" taking (response, reference) -> float) so
that it can never take the run down: an exception or a timeout scores 0 and is counted.

inline: called in this process, bounded by a SIGALRM timer (main thread only).
process: called in a separate worker process with CPU-time and memory limits and sockets
disabled; a worker that hangs is killed and replaced.
"""

from __future__ import annotations

import functools
import importlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("sgpo.verify")
MAX_LOGGED = 5
WORKER_MEMORY_BYTES = 2 * 1024**3
STARTUP_ALLOWANCE_S = 30.0

VerifyFn = Callable[[str, str], float]


def import_verifier(spec: str) -> VerifyFn:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"verifier {spec!r} must be an import path like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import verifier {spec!r}: {e}") from e
    if not callable(fn):
        raise ValueError(f"verifier {spec!r} is not callable")
    return fn


@dataclass
class VerifierStats:
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    logged: list[str] = field(default_factory=list)

    def note(self, kind: str, query_id: str, detail: str) -> None:
        if len(self.logged) < MAX_LOGGED:
            message = f"verifier {kind} on query {query_id}: {detail}"
            self.logged.append(message)
            log.warning(message)


class VerifierTimeout(BaseException):
    """A BaseException so that a verifier's own `except Exception` cannot swallow the timeout."""


class WorkerDied(RuntimeError):
    pass


def _clamp(score: object) -> float:
    value = float(score)  # a non-numeric return is an error like any other
    if value != value:
        raise ValueError("verifier returned NaN")
    return value


class Verifier:
    def __init__(
        self,
        spec: str,
        timeout_s: float = 5.0,
        isolation: str = "inline",
        kwargs: dict | None = None,
    ) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self.isolation = isolation
        self.kwargs = dict(kwargs or {})
        self.stats = VerifierStats()
        # Fail fast on a bad path, in both modes.
        self._fn = functools.partial(import_verifier(spec), **self.kwargs)
        self._worker: _Worker | None = None

    def score(
        self, responses: list[str], references: list[str], query_ids: list[str]
    ) -> list[float]:
        return [
            self.score_one(r, ref, q)
            for r, ref, q in zip(responses, references, query_ids, strict=True)
        ]

    def score_one(self, response: str, reference: str, query_id: str) -> float:
        self.stats.calls += 1
        try:
            if self.isolation == "process":
                return self._worker_call(response, reference)
            return _clamp(self._inline_call(response, reference))
        except VerifierTimeout:
            self.stats.timeouts += 1
            self.stats.note("timeout", query_id, f"no answer within {self.timeout_s}s")
        except Exception as e:  # noqa: BLE001 - any verifier failure scores 0 by design
            self.stats.errors += 1
            self.stats.note("error", query_id, f"{type(e).__name__}: {e}")
        return 0.0

    def _inline_call(self, response: str, reference: str) -> float:
        if threading.current_thread() is not threading.main_thread():
            return self._fn(response, reference)

        def on_alarm(signum: int, frame: object) -> None:
            raise VerifierTimeout

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            return self._fn(response, reference)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _worker_call(self, response: str, reference: str) -> float:
        if self._worker is None:
            self._worker = _Worker(self.spec, self.kwargs, self.timeout_s)
        try:
            return self._worker.call(response, reference)
        except (VerifierTimeout, WorkerDied):
            self._worker.kill()
            self._worker = None
            raise

    def close(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None


def _worker_main(spec: str, kwargs: dict, cpu_seconds: int, conn) -> None:  # noqa: ANN001 - Connection
    import resource
    import socket

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))

    def no_network(*args: object, **kwargs: object) -> None:
        raise PermissionError("network access is disabled in verifier workers")

    socket.socket = no_network  # type: ignore[assignment,misc]
    socket.create_connection = no_network  # type: ignore[assignment]
    socket.getaddrinfo = no_network  # type: ignore[assignment]
    fn = functools.partial(import_verifier(spec), **kwargs)
    while True:
        message = conn.recv()
        if message is None:
            return
        try:
            conn.send(("ok", _clamp(fn(*message))))
        except Exception as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"))


class _Worker:
    def __init__(self, spec: str, kwargs: dict, timeout_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.timeout_s = timeout_s
        # The CPU limit is a backstop for the worker's whole life; the wall-clock timeout
        # per call is enforced here by poll().
        self.process = ctx.Process(
            target=_worker_main, args=(spec, kwargs, 3600, child), daemon=True
        )
        self.process.start()
        self.started_up = False

    def call(self, response: str, reference: str) -> float:
        # The first call also waits for the worker to start and import the verifier.
        limit = self.timeout_s if self.started_up else self.timeout_s + STARTUP_ALLOWANCE_S
        try:
            self.conn.send((response, reference))
            if not self.conn.poll(limit):
                raise VerifierTimeout
            status, value = self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError) as e:
            raise WorkerDied(f"verifier worker died (exit code {self.process.exitcode})") from e
        self.started_up = True
        if status == "error":
            raise RuntimeError(value)
        return value

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
