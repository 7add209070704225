"""Every case of the judgement corpus (tests/core/judgement_cases.py) is judged exactly as the
code at 010db01 judged it: each reason's status, code and message, what stays ok, the valid
events and the merge."""

from __future__ import annotations

import json

import pytest
from judgement_cases import GOLDEN, cases, judge

GOLDEN_JUDGEMENTS = json.loads(GOLDEN.read_text())
CASES = cases()


def test_the_corpus_is_the_one_the_golden_file_judged():
    assert [name for name, *_ in CASES] == list(GOLDEN_JUDGEMENTS)


@pytest.mark.parametrize("suffix,bundle,state,name", [(*c[1:], c[0]) for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_judged_as_before(suffix, bundle, state, name):
    assert judge(suffix, bundle, state) == GOLDEN_JUDGEMENTS[name]


def test_the_corpus_holds_the_cases_a_shortcut_must_refuse():
    """A shortcut that compares values instead of encoding them would go wrong on these:
    values Python holds equal that JSON does not (in a state, in a receipt's record), and a
    merge one level deeper than its bundle."""
    state_not_merge = ("state_mismatch", "state_not_merge")
    for name in ("state/event_count_float", "state/invalid_count_false"):
        judged = GOLDEN_JUDGEMENTS[name]
        assert [tuple(r[:2]) for r in judged["reasons"]] == [state_not_merge], name
    for name, code in (("receipt/float", "receipt_other_record"),
                       ("receipt/float_stale", "receipt_hash_mismatch")):  # fmt: skip
        assert code in [r[1] for r in GOLDEN_JUDGEMENTS[name]["reasons"]], name
    deep = GOLDEN_JUDGEMENTS["deep/merge_served"]["reasons"]
    assert ["malformed", "state_not_json", "state: nesting deeper than 64 levels"] in deep
    assert GOLDEN_JUDGEMENTS["state/honest"]["state_ok"]
