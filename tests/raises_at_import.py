"""A verifier module that fails as it is imported (as one with a bug at module level does)."""

raise RuntimeError("this module is broken at import")


def score(response: str, reference: str) -> float:  # never reached
    return float(response == reference)
