"""benchmarks/skip_screen.py: the offline screen of skip rules (benchmarks/ROUNDS.md, round 39)."""

from pathlib import Path

import pytest
from tiny_run import load_script

skip_screen = load_script(Path(__file__).parents[1] / "benchmarks" / "skip_screen.py")


def test_windowed_posterior_reads_only_the_last_kept_groups() -> None:
    kept = [(8, 8)] * 5 + [(8, 4)]
    whole = skip_screen.posterior(1.0)(kept)  # p = 45/50: a group of 8 is mixed 57% of the time
    last = skip_screen.posterior(1.0, window=1)(kept)  # p = 5/10: almost surely mixed
    assert whole == pytest.approx(1 - 0.9**8 - 0.1**8)
    assert last == pytest.approx(1 - 2 * 0.5**8)


def test_table_rule_skips_the_states_that_predict_dead_groups_first() -> None:
    # Solved queries stay all correct, split queries stay mixed: the last group's correct count
    # tells them apart, so half of the dead groups are skipped without losing a mixed one,
    # while the streak-blind whole-history table of a single state has to lose mixed groups.
    histories = [[(8, 8)] * 5 for _ in range(4)] + [[(8, 4)] * 5 for _ in range(4)]
    last = skip_screen.STATES["last group's correct count, streak"]
    assert skip_screen.table_rule_mixed_lost(histories, histories, last, 0.5) == 0.0
    assert skip_screen.table_rule_mixed_lost(histories, histories, lambda groups: 0, 0.5) == 0.5
