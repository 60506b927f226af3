"""Gold files, metrics and the keyword baseline."""

from __future__ import annotations

import json

import pytest

from tagging import TaggingError, TextSegment
from tagging.evaluate import Scores, evaluate, load_gold, parse_gold_line
from tagging.keyword import KeywordTagger
from tests.conftest import REPO

DATA = REPO / "tagging" / "data"


def test_scores_arithmetic():
    s = Scores()
    s.add({"a", "b"}, {"b", "c"})
    s.add({"d"}, set())
    assert (s.tp, s.fp, s.fn) == (1, 1, 2)
    assert s.precision == 0.5 and s.recall == pytest.approx(1 / 3) and s.f1 == pytest.approx(0.4)
    assert Scores().f1 == 1.0  # nothing to find, nothing found


def test_text_items_are_the_customer_and_segments_keep_speakers():
    item = parse_gold_line({"id": "1", "text": "热玛吉多少钱", "project": ["thermage"], "intent": ["price_inquiry"]})
    assert item.segments[0].speaker == "customer"
    assert item.labels == {("project", "thermage"), ("intent", "price_inquiry")}
    item = parse_gold_line({"id": "2", "segments": [{"speaker": "staff", "text": "您好"}, {"speaker": None, "text": "嗯"}]})
    assert [s.speaker for s in item.segments] == ["staff", None] and not item.labels


@pytest.mark.parametrize(
    "obj,message",
    [
        ([], "expected a JSON object"),
        ({"id": "x"}, "needs 'text'"),
        ({"segments": [{"speaker": "boss", "text": "a"}]}, "speaker is 'boss'"),
        ({"text": "a", "project": "thermage"}, "must be a list"),
        ({"segments": []}, "non-empty list"),
    ],
)
def test_bad_items_say_what_is_wrong(obj, message):
    with pytest.raises(TaggingError, match=message):
        parse_gold_line(obj)


def test_load_gold_names_the_bad_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"text": "a"}\n{oops\n', encoding="utf-8")
    with pytest.raises(TaggingError, match=r"g.jsonl:2: not valid JSON"):
        load_gold(path)


def test_evaluate_counts_per_family_code_and_case(taxonomy):
    items = [
        parse_gold_line({"id": "1", "text": "我没有痘印", "concern": [], "cases": ["negation"]}),
        parse_gold_line({"id": "2", "text": "热玛吉多少钱", "project": ["thermage"], "intent": ["price_inquiry"]}),
    ]
    kw = evaluate(KeywordTagger(taxonomy).tag, items)
    assert kw.family["concern"].fp == 1  # the keyword tracker tags the denied 痘印
    assert kw.case["negation"]["concern"].precision == 0.0
    assert kw.code[("project", "thermage")].tp == 1
    assert kw.errors and kw.errors[0]["id"] == "1" and kw.errors[0]["extra"] == ["concern.acne_marks"]
    json.dumps(kw.as_dict())  # serialisable


def test_development_set_is_big_varied_and_valid(taxonomy):
    items = load_gold(DATA / "dev.jsonl")
    assert len(items) >= 400
    assert len({i.id for i in items}) == len(items)
    assert all((k, c) in taxonomy.codes for i in items for k, c in i.labels)
    cases = {c for i in items for c in i.cases}
    assert {"negation", "hypothetical", "asr_error", "colloquial", "off_topic", "english", "exchange", "staff_list"} <= cases
    assert sum(len(i.segments) > 1 for i in items) >= 150  # staff/customer exchanges
    train = load_gold(DATA / "train.jsonl")
    # written independently: no item repeats a training item (a short turn like "How long does it last?" may)
    as_text = lambda i: " | ".join(s.text for s in i.segments)  # noqa: E731
    assert not {as_text(i) for i in train} & {as_text(i) for i in items}
    assert len({s.text for i in train for s in i.segments} & {s.text for i in items for s in i.segments}) <= 2
