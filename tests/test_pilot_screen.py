"""benchmarks/pilot_screen.py: pilot-then-commit screened on logged group outcomes."""

from collections import Counter
from pathlib import Path

import pytest
from tiny_run import load_script

pilot_screen = load_script(Path(__file__).parents[1] / "benchmarks" / "pilot_screen.py")


def test_a_pilot_ends_a_group_by_its_first_responses_as_exchangeable_draws() -> None:
    # 7 of 8 correct: the first 4 all correct in C(7, 4) / C(8, 4) = 35 / 70 of orders
    assert pilot_screen.pilot_ends(8, 7, 4, "all-solved") == pytest.approx(0.5)
    assert pilot_screen.pilot_ends(8, 8, 4, "all-solved") == 1.0
    assert pilot_screen.pilot_ends(8, 0, 4, "all-solved") == 0.0
    assert pilot_screen.pilot_ends(8, 0, 4, "all-equal") == 1.0
    assert pilot_screen.pilot_ends(4, 4, 4, "all-solved") == 0.0  # no pilot: the whole group


def test_the_screen_weighs_saved_responses_against_lost_mixed_groups() -> None:
    groups = Counter({(8, 8): 1, (8, 7): 1})
    saved, lost = pilot_screen.screen(groups, 4, "all-solved")
    # the solved group saves 4 for sure, the 7-of-8 one half the time: 6 of 16 responses
    assert saved == pytest.approx(6 / 16)
    assert lost == pytest.approx(0.5)


def test_logged_groups_read_group_outcomes_up_to_a_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 0, "eval_acc": 0.5}\n'
        '{"step": 1, "group_outcomes": [["a", 8, 8], ["b", 8, 3]]}\n'
        '{"step": 2, "group_outcomes": [["a", 8, 7]]}\n'
    )
    assert pilot_screen.logged_groups([path], 1) == Counter({(8, 8): 1, (8, 3): 1})
    assert sum(pilot_screen.logged_groups([path], None).values()) == 3
