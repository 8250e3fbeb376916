"""Broken sites as data folders: tests/cases/nodeset/<case>/ holds the site and the expected error.

Each line of expected_error.txt must appear in the message, which names the file, the node and
the problem; problem_count.txt, where present, is how many problems the site has (a mistyped
connection scheme is one problem, not one per variable). The same check refuses the site at start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.nodeset.commands import check_files
from gateway.nodeset.model import NodesetError

CASES = sorted((Path(__file__).resolve().parents[1] / "cases" / "nodeset").iterdir())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_broken_site_is_refused_with_a_message_naming_file_node_and_problem(case: Path) -> None:
    files = sorted(case.glob("*.xml"))
    with pytest.raises(NodesetError) as err:
        await check_files(files)
    message = str(err.value)
    for expected in (case / "expected_error.txt").read_text().splitlines():
        if expected.strip():
            assert expected in message, f"{expected!r} not in:\n{message}"
    for problem in err.value.problems:
        assert problem.file.endswith(".xml")
    count = case / "problem_count.txt"
    if count.exists():
        assert len(err.value.problems) == int(count.read_text()), message


async def test_the_good_fixture_passes() -> None:
    summary = await check_files([Path(__file__).resolve().parents[1] / "fixtures" / "sim_site.xml"])
    assert summary.startswith("ok: ") and "1 devices, 5 bound variables" in summary
