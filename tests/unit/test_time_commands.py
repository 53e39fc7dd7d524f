"""tools/time_commands.py reads the time the README states for each quick-start command."""

from __future__ import annotations

import pytest

from tools.time_commands import COMMANDS, README, stated_seconds


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_stated_time(command: str) -> None:
    """The README states a time for each command the tool measures, between a second and 15 minutes."""
    assert 1 <= stated_seconds(README.read_text(encoding="utf-8"), command) <= 15 * 60


def test_the_first_about_figure_of_the_time_cell_is_the_stated_time() -> None:
    """'about 7 min' is 420 s, and later figures in the cell (measured, first run) are not it."""
    readme = (
        "| command | what | time |\n|---|---|---|\n"
        "| `./scripts/test` | about 5 s of lint | about 7 min (6 min 38 s measured); about 2 min more the first time |\n"
        "| `./scripts/demo` | x | about 6.5 s |\n"
    )
    assert stated_seconds(readme, "./scripts/test") == 420
    assert stated_seconds(readme, "./scripts/demo") == 6.5


@pytest.mark.parametrize(
    ("readme", "problem"),
    [
        ("| `./scripts/demo` | runs it | quickly |\n", "states no"),
        ("| `./scripts/serve` | x | about 5 s |\n", "has no row"),
    ],
)
def test_a_row_without_a_time_is_an_error(readme: str, problem: str) -> None:
    """A missing row or a row without 'about N s|min' is named, not read as zero."""
    with pytest.raises(ValueError, match=problem):
        stated_seconds(readme, "./scripts/demo")
