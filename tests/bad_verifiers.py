"""Verifiers for the tests: misbehaving ones (raise, hang, reach for the network) and a
deterministic coin flip that gives any group of distinct responses mixed rewards, and one that
gives partial credit.

Imported by module name ("bad_verifiers:raising"): pytest puts tests/ on sys.path, and a spawned
verifier worker inherits sys.path (the tests also set PYTHONPATH for it).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import sys
import time

import numpy as np


def raising(response: str, reference: str) -> float:
    raise RuntimeError("this verifier always fails")


def raising_on_odd(response: str, reference: str) -> float:
    """Fails on every query whose answer is odd; exact match otherwise."""
    if int(reference) % 2:
        raise RuntimeError("this verifier fails on odd answers")
    return float(response == reference)


def hanging(response: str, reference: str) -> float:
    """Hangs on the response "hang"; otherwise scores like exact match."""
    if response == "hang":
        time.sleep(60)
    return float(response == reference)


def network(response: str, reference: str) -> float:
    """Tries to open a connection (port 9, discard: closed on a test machine)."""
    with socket.create_connection(("127.0.0.1", 9), timeout=2):
        return 1.0


def math_then_hang(response: str, reference: str) -> float:
    """Runs math_verify, then hangs: math_verify must leave the caller's timer armed."""
    from sgpo.verifiers import math_verify

    math_verify(response, reference)
    time.sleep(60)
    return 1.0


def not_a_number(response: str, reference: str) -> object:
    return "yes"


def coin_flip(response: str, reference: str) -> float:
    """1 or 0 from a hash of the response: distinct responses get mixed rewards."""
    return float(hashlib.sha256(response.encode()).digest()[0] % 2)


def exits(response: str, reference: str) -> float:
    """sys.exit() on "exit", os._exit() on "hard-exit"; else exact match."""
    if response == "exit":
        sys.exit(0)
    if response == "hard-exit":
        os._exit(0)
    return float(response == reference)


REWARDS = {
    "two": 2.0,
    "minus-one": -1,
    "inf": math.inf,
    "nan": math.nan,
    "string": "1",
    "none": None,
    "half": 0.5,
    "true": True,
    "numpy": np.float32(0.25),
    "numpy-bool": np.isclose(1.0, 1.0),  # np.bool_, not a numbers.Real
}


class Unprintable(RuntimeError):
    def __str__(self) -> str:
        raise ValueError("no text for this one")


def raises_unprintable(response: str, reference: str) -> float:
    """Raises an exception whose str() fails too."""
    raise Unprintable


def returns(response: str, reference: str) -> object:
    """Returns REWARDS[response]."""
    return REWARDS[response]


def swallows_once(response: str, reference: str) -> float:
    """Catches the timeout, then answers 1.0 at once: a late answer."""
    with contextlib.suppress(BaseException):
        time.sleep(60)
    return 1.0


def swallows_always(response: str, reference: str) -> float:
    """Catches every interrupt and carries on for ever."""
    while True:
        with contextlib.suppress(BaseException):
            time.sleep(60)


def c_loop(response: str, reference: str) -> float:
    """Minutes inside one C call (sum over a range) that never runs Python signal handlers."""
    return float(sum(range(10**12)) > 0)


def fixed_or_coin(response: str, reference: str) -> float:
    """By the reference answer: always wrong (0 mod 3), always right (1 mod 3) or the coin flip,
    so a profile has p = 0, p = 1 and mixed queries."""
    kind = int(reference) % 3
    return 0.0 if kind == 0 else 1.0 if kind == 1 else coin_flip(response, reference)


def graded(response: str, reference: str) -> float:
    """Partial credit by the reference answer: 0 (0 mod 3), 0.7 (1 mod 3) or 1 (2 mod 3), so
    that what a profile counts as solved depends on the success threshold."""
    return (0.0, 0.7, 1.0)[int(reference) % 3]


def one_argument(response: str) -> float:
    """A verifier written without the reference: it cannot be called as sgpo calls one."""
    return 0.0


def share_of_tests(response: str, reference: str) -> float:
    """Every one of n unit tests passed, summed per test as such verifiers do: ten 0.1s make
    0.9999999999999999 (2 mod 3), nine 1/9s 1.0000000000000002 (1 mod 3); 0 mod 3 fail."""
    n = (0, 9, 10)[int(reference) % 3]
    return sum(1 / n for _ in range(n)) if n else 0.0


def length_credit(response: str, reference: str) -> float:
    """Partial credit below the default threshold: by the response's length (0 to 0.3) for an
    even reference answer, 0 for an odd one, so that every query is unsolvable by p_hat but the
    even ones' samples' rewards vary."""
    return 0.1 * (len(response) % 4) if int(reference) % 2 == 0 else 0.0


def never(response: str, reference: str) -> float:
    """Scores every response 0 (a verifier that cannot read the model's answers)."""
    return 0.0


def thinking(response: str, reference: str) -> float:
    """1 for a response read as begun inside a <think> (sgpo.models.Policy.answer_text)."""
    return float(response.startswith("<think>"))


def prints(response: str, reference: str) -> float:
    """Prints as it scores (a verifier left with its debugging output), taking a while."""
    print(f"checking {response!r} against {reference!r}")
    time.sleep(0.02)
    return float(response == reference)
