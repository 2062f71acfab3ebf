"""core/blocklist.py against the case table js/blocklist.js is also checked against (tests/blocklist_cases.json).

The frontend preview parses block lists with its own copy of the grammar; this table is what keeps the two
the same: each input gives the same result, or the same error text, in Python and in JavaScript
(tests/js/blocklist.test.mjs runs the same cases under node)."""
import json
from pathlib import Path

import pytest

from tokenfocus.core.blocklist import DOUBLE, SINGLE, BlockListError, format_blocks, parse_block_list, resolve_blocks
from tokenfocus.core.schedule import ScheduleError, check_percents

CASES = json.loads((Path(__file__).resolve().parents[1] / "blocklist_cases.json").read_text(encoding="utf-8"))


def _id(case):
    return f"{case['desc']} {case['text']!r}"


@pytest.mark.parametrize("case", CASES["parse"], ids=_id)
def test_parse(case):
    if "error" in case:
        with pytest.raises(BlockListError) as caught:
            parse_block_list(case["text"])
        assert str(caught.value) == case["error"]
    else:
        sel = parse_block_list(case["text"])
        assert {"all": sel.everything, "double": sorted(sel.double), "single": sorted(sel.single)} == case["result"]


@pytest.mark.parametrize("case", CASES["resolve"], ids=_id)
def test_resolve(case):
    def run():
        return resolve_blocks(parse_block_list(case["text"]), case["n_double"], case["n_single"], case["model"])

    if "error" in case:
        with pytest.raises(BlockListError) as caught:
            run()
        assert str(caught.value) == case["error"]
    else:
        blocks = run()
        got = {
            "double": sorted(i for kind, i in blocks if kind == DOUBLE),
            "single": sorted(i for kind, i in blocks if kind == SINGLE),
            "formatted": format_blocks(blocks),
        }
        assert got == case["result"]


@pytest.mark.parametrize("case", CASES["percents"], ids=lambda c: f"{c['start']}-{c['end']}")
def test_percents(case):
    if "error" in case:
        with pytest.raises(ScheduleError) as caught:
            check_percents(case["start"], case["end"])
        assert str(caught.value) == case["error"]
    else:
        check_percents(case["start"], case["end"])


def test_the_table_covers_every_kind_of_error():
    errors = " ".join(c.get("error", "") for c in CASES["parse"] + CASES["resolve"])
    for fragment in ("empty item", "is not a block index or range", "runs backwards", "past the model's depth", "single-block indices"):
        assert fragment in errors
