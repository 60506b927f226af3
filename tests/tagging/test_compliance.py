import re

import pytest

import tagging
from tagging import ComplianceChecker, ComplianceFlag, TaxonomyError, TextSegment

CODES = """guarantee_effect no_side_effects zero_risk absolutely_safe permanent_result cure_claim
    superlative pressure_sale no_pain_promise medical_false""".split()


@pytest.fixture(scope="module")
def checker() -> ComplianceChecker:
    return ComplianceChecker.load()


def flagged(checker, text, speaker="staff"):
    return [(f.code, f.match) for f in checker.check([TextSegment(0, text, speaker=speaker)])]


def test_bundled_rules_are_well_formed(checker):
    assert set(checker.rules) == set(CODES)
    assert re.match(r"^\d{4}\.\d+\.\d+$", checker.rules_version)
    for rule in checker.rules.values():
        assert rule.label and rule.label_en and rule.label_en != rule.code
        assert len(rule.terms) >= 3, rule.code
    assert tagging.ComplianceChecker is ComplianceChecker and "ComplianceFlag" in tagging.__all__


@pytest.mark.parametrize(
    "text,code,match",
    [
        ("保证效果", "guarantee_effect", "保证效果"),
        ("您放心，我们这个保证效果。", "guarantee_effect", "保证效果"),
        ("做完包您满意", "guarantee_effect", "包您满意"),
        ("这个百分之百有效的", "guarantee_effect", "百分之百有效"),
        ("我跟您打包票", "guarantee_effect", "打包票"),
        ("不是我吹，我们保证效果", "guarantee_effect", "保证效果"),
        ("绝对没有副作用", "no_side_effects", "绝对没有副作用"),
        ("我们用的是正规产品，不会有任何副作用的", "no_side_effects", "不会有任何副作用"),
        ("这个是零风险的", "zero_risk", "零风险"),
        ("你放心，一点风险都没有", "zero_risk", "一点风险都没有"),
        ("百分之百安全", "absolutely_safe", "百分之百安全"),
        ("这个项目绝对安全", "absolutely_safe", "绝对安全"),
        ("一次就根治", "cure_claim", "一次就根治"),
        ("我们能彻底治好您的痘痘", "cure_claim", "彻底治好"),
        ("永久不反弹", "permanent_result", "永久不反弹"),
        ("做一次一劳永逸", "permanent_result", "一劳永逸"),
        ("全国最好", "superlative", "全国最好"),
        ("我们是全国第一的机构", "superlative", "全国第一"),
        ("今天不定就没了哦", "pressure_sale", "今天不定就没了"),
        ("这是最后一个名额了", "pressure_sale", "最后一个名额"),
        ("过了今天就恢复原价了", "pressure_sale", "过了今天就恢复原价"),
        ("现在都是无针的，一点都不疼", "no_pain_promise", "一点都不疼"),
        ("保证不疼", "no_pain_promise", "保证不疼"),
        ("这个无需恢复期", "medical_false", "无需恢复期"),
        ("打完就能上班", "medical_false", "打完就能上班"),
        ("We offer guaranteed results.", "guarantee_effect", "guaranteed results"),
        ("There are no side effects at all", "no_side_effects", "no side effects"),
        ("It's 100% safe", "absolutely_safe", "100% safe"),
        ("It is ＧＵＡＲＡＮＴＥＥＤ ＲＥＳＵＬＴＳ", "guarantee_effect", "ＧＵＡＲＡＮＴＥＥＤ ＲＥＳＵＬＴＳ"),  # full width
    ],
)
def test_claims_are_flagged(checker, text, code, match):
    assert flagged(checker, text) == [(code, match)]


@pytest.mark.parametrize(
    "text",
    [
        "我们不能保证效果",
        "我们不保证效果，要看个人体质",
        "没有人能保证百分之百",
        "谁也不能保证百分之百有效",
        "不敢说零风险",
        "任何项目都有风险",
        "任何医美项目都不是零风险的",
        "零风险是不可能的",
        "效果保证不了，只能说尽量",
        "有没有副作用要看个人体质",
        "会不会有副作用？一般是轻微红肿",
        "一般不会有副作用，少数人会红肿",
        "我们没法根治，只能改善",
        "没有所谓的零风险",
        "不能说百分之百安全",
        "副作用没有那么大",
        "We can't guarantee results",
        "No one can promise it is 100% safe",
        # ordinary words that only look like claims
        "这个永久脱毛大概要做六次",
        "您是第一次做吗？",
        "我帮您把产品包好了",
        "恢复期大概一周左右",
        "这可能会有点疼，我们会敷麻药",
        "这是我能给您的最低价了",
        "医生只有今天有空",
        "我之前在第一医院工作",
        "今天天气不错，路上有点堵车。",
        "Multiple sessions are usually needed.",
    ],
)
def test_denials_hedges_and_ordinary_speech_are_not_flagged(checker, text):
    assert flagged(checker, text) == []


@pytest.mark.parametrize(
    "text",
    ["保证效果吗？", "你们这个真的没有副作用吗", "听说是零风险的？", "Is it 100% safe?",
     "我朋友说你们这里保证效果，绝对安全", "上次那家说一次就根治，全国最好", "They told me there are no side effects."],
)
def test_the_customer_asking_is_never_a_violation(checker, text):
    assert flagged(checker, text, speaker="customer") == []


def test_staff_and_unknown_speakers_are_checked_customers_are_not(checker):
    segs = [
        TextSegment(0, "保证效果吗？", speaker="customer"),
        TextSegment(1, "放心，我们保证效果，绝对安全。", start=3.0, end=6.5, speaker="staff"),
        TextSegment(2, "零风险的", speaker=None),
        TextSegment(3, "零风险的", speaker="customer"),
    ]
    flags = checker.check(segs)
    assert [(f.segment, f.code, f.speaker) for f in flags] == [
        (1, "guarantee_effect", "staff"), (1, "absolutely_safe", "staff"), (2, "zero_risk", None),
    ]
    first = flags[0]
    assert isinstance(first, ComplianceFlag)
    assert (first.start, first.end, first.quote, first.label) == (3.0, 6.5, segs[1].text, "保证效果")
    assert first.rules_version == checker.rules_version
    assert first.to_dict()["match"] == "保证效果"


def test_plain_strings_are_unknown_speaker(checker):
    flags = checker.check(["您好", "这个一次就根治"])
    assert [(f.segment, f.code, f.speaker) for f in flags] == [(1, "cure_claim", None)]


@pytest.mark.parametrize(
    "text,match",
    [
        ("您放心，这个保證效果，絕對沒有副作用", ["保證效果", "絕對沒有副作用"]),  # traditional script
        ("嗯，我们这个效果保证，零風險的，一次就根治", ["效果保证", "零風險", "一次就根治"]),
        ("说实话 it's 100% safe，包您满意", ["100% safe", "包您满意"]),
    ],
)
def test_offsets_point_at_the_words_in_the_original_text(checker, text, match):
    flags = checker.check([TextSegment(7, text, speaker="staff")])
    assert [f.match for f in flags] == match
    for f in flags:
        assert f.segment == 7 and f.quote == text
        assert text[f.char_start : f.char_end] == f.match


def test_a_negation_covers_only_its_own_clause(checker):
    got = flagged(checker, "我们不能保证效果，但是绝对没有副作用")
    assert got == [("no_side_effects", "绝对没有副作用")]
    assert flagged(checker, "零风险是不可能的，不过保证效果") == [("guarantee_effect", "保证效果")]


def test_several_claims_in_one_conversation_are_all_reported(checker):
    segs = [
        TextSegment(0, "您好，想了解点什么？", speaker="staff"),
        TextSegment(1, "我想做热玛吉，会不会有副作用？", speaker="customer"),
        TextSegment(2, "没有副作用的，全国最好的设备，一次就见效。", speaker="staff"),
        TextSegment(3, "活动仅限今天，最后一个名额了。", speaker="staff"),
    ]
    codes = [f.code for f in checker.check(segs)]
    assert codes == ["no_side_effects", "superlative", "cure_claim", "pressure_sale", "pressure_sale"]


def test_empty_input(checker):
    assert checker.check([]) == []
    assert checker.check([TextSegment(0, "", speaker="staff")]) == []


@pytest.mark.parametrize(
    "content,message",
    [
        ("codes: {}\n", "'version'"),
        ("version: 1\ncodes: []\n", "non-empty mapping"),
        ("version: 1\ncodes:\n  Bad-Code: {label: x, terms: [保证效果]}\n", "not snake_case"),
        ("version: 1\ncodes:\n  promise: {terms: [保证效果]}\n", "promise has no label"),
        ("version: 1\ncodes:\n  promise: {label: 承诺}\n", "neither terms nor patterns"),
        ("version: 1\ncodes:\n  promise: {label: 承诺, term: [保证效果]}\n", "unknown keys \\['term'\\]"),
        ("version: 1\ncodes:\n  promise: {label: 承诺, terms: 保证效果}\n", "promise.terms: expected a list"),
        ("version: 1\ncodes:\n  promise: {label: 承诺, patterns: ['保证(效果']}\n", "not a valid regular expression"),
        ("version: 1\ncodes:\n  promise: {label: 承诺, patterns: ['(保证)?']}\n", "matches the empty string"),
        ("version: 1\ncodes: [\n", "not valid YAML"),
    ],
)
def test_bad_rule_files_fail_clearly(tmp_path, content, message):
    bad = tmp_path / "compliance.yaml"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(TaxonomyError, match=message):
        ComplianceChecker.load(bad)


def test_missing_file_fails_clearly(tmp_path):
    with pytest.raises(TaxonomyError, match="cannot read compliance rules"):
        ComplianceChecker.load(tmp_path / "missing.yaml")


def test_a_custom_rule_file_is_used(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "version: t1\ncodes:\n  promise:\n    label: 承诺\n    label_en: Promise\n    terms: [包变美]\n"
        "    patterns: ['稳(赚|赢)']\n",
        encoding="utf-8",
    )
    c = ComplianceChecker.load(path)
    assert c.rules_version == "t1"
    assert flagged(c, "这个包变美，稳赢") == [("promise", "包变美"), ("promise", "稳赢")]
    assert flagged(c, "保证效果") == []
