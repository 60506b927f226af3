import pytest

from tagging import TextSegment


def codes(tagger, *texts, speaker=None):
    segs = [TextSegment(index=i, text=t, speaker=speaker) for i, t in enumerate(texts)]
    return {(a.kind, a.code) for a in tagger.tag(segs)}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("你好，我想了解一下热玛吉，我脸上有点松弛，大概多少钱？",
         {("project", "thermage"), ("concern", "sagging"), ("intent", "price_inquiry")}),
        ("我脸上的痘印很明显，还有点黑眼圈，想问问皮秒能不能去掉。",
         {("project", "picosecond"), ("concern", "acne_marks"), ("concern", "dark_circles")}),
        ("有点贵，我再考虑一下，回去和老公商量商量。", {("intent", "objection_price"), ("intent", "undecided")}),
        ("打个水光吧，顺便问下瘦脸针疼不疼", {("project", "skin_booster"), ("project", "botulinum"), ("intent", "objection_pain")}),
        ("我想問問熱瑪吉多少錢", {("project", "thermage"), ("intent", "price_inquiry")}),  # traditional script
        ("How much is laser hair removal? Does it hurt?",
         {("project", "laser_hair_removal"), ("intent", "price_inquiry"), ("intent", "objection_pain")}),
    ],
)
def test_plain_cases(tagger, text, expected):
    assert codes(tagger, text) == expected


def test_negation_removes_only_the_negated_clause(tagger):
    got = codes(tagger, "我没有痘印，就是毛孔有点粗大，想做个水光针。")
    assert ("concern", "acne_marks") not in got
    assert {("concern", "large_pores"), ("project", "skin_booster")} <= got


@pytest.mark.parametrize("text", ["我没有痘印", "脸上没什么痘印", "我不怕疼", "从来没有长过黄褐斑"])
def test_negated_statements_tag_nothing_of_their_own(tagger, text):
    got = codes(tagger, text)
    assert not {("concern", "acne_marks"), ("intent", "objection_pain"), ("concern", "melasma")} & got


def test_off_topic_chatter_tags_nothing(tagger):
    assert codes(tagger, "今天天气不错，路上有点堵车，这个东西马上就好。", "Multiple people came in.") == set()


def test_evidence_points_at_the_words(tagger):
    seg = TextSegment(index=3, text="最近法令纹有点深，想问问玻尿酸多少钱。", start=12.5, end=16.0, speaker="customer")
    tags = {a.code: a for a in tagger.tag([seg])}
    ev = tags["ha_filler"].evidence[0]
    assert (ev.segment, ev.start, ev.end, ev.speaker) == (3, 12.5, 16.0, "customer")
    assert seg.text[ev.char_start : ev.char_end] == ev.match == "玻尿酸"
    assert tags["nasolabial_folds"].evidence[0].match in ("法令纹", "法令纹有点深")  # filler-tolerant match
    a = tags["ha_filler"]
    assert a.method == "rules" and a.taxonomy_version and a.tagger_version and 0 < a.confidence <= 0.99


def test_staff_listing_projects_is_not_the_customer_asking(tagger):
    staff = TextSegment(0, "我们这里有热玛吉、超声刀、水光针、光子嫩肤，还有皮秒。", speaker="staff")
    customer = TextSegment(1, "超声刀大概多少钱？", speaker="customer")
    got = {(a.kind, a.code) for a in tagger.tag([staff, customer])}
    assert got == {("project", "hifu"), ("intent", "price_inquiry")}


def test_staff_offer_counts_with_lower_confidence_and_no_concern(tagger):
    staff = TextSegment(0, "您这个法令纹可以考虑玻尿酸，价格是多少钱都好说。", speaker="staff")
    tags = {(a.kind, a.code): a for a in tagger.tag([staff])}
    assert set(tags) == {("project", "ha_filler")}
    assert tags[("project", "ha_filler")].confidence < 0.7


def test_repeated_mentions_raise_confidence(tagger):
    once = {a.code: a.confidence for a in tagger.tag(["我想做热玛吉"])}
    twice = {a.code: a.confidence for a in tagger.tag(["我想做热玛吉", "热玛吉效果好吗"])}
    assert twice["thermage"] > once["thermage"]


@pytest.mark.parametrize(
    "text,code",
    [
        ("我想做热马吉", ("project", "thermage")),  # listed ASR variant
        ("潮声刀多少钱", ("project", "hifu")),  # sound-alike, not listed
        ("菠尿酸打哪里好", ("project", "ha_filler")),
        ("双下八特别明显", ("concern", "double_chin")),
    ],
)
def test_recognition_errors_match_by_sound(tagger, text, code):
    assert code in codes(tagger, text)


@pytest.mark.parametrize("text", ["我在抖音上看到你们的", "我脸上有皮屑", "一点半点都不想等"])
def test_sound_alikes_of_ordinary_words_do_not_tag(tagger, text):
    got = codes(tagger, text)
    assert not {("concern", "acne_marks"), ("concern", "large_pores"), ("concern", "pigmentation")} & got


@pytest.mark.parametrize(
    "text,absent,present",
    [
        ("我妈妈眼袋很重，你们这做眼袋手术多少钱？", ("concern", "eye_bags"), ("project", "eye_bag_surgery")),
        ("如果以后长斑了怎么办", ("concern", "pigmentation"), None),
        ("点痣会不会留疤", ("concern", "scars"), ("project", "mole_removal")),
        ("瘦脸针打完能维持多久", ("concern", "wide_jaw"), ("project", "botulinum")),
    ],
)
def test_concerns_are_hers_and_stated(tagger, text, absent, present):
    got = codes(tagger, text)
    assert absent not in got
    if present:
        assert present in got


def test_worried_questions_keep_their_intent(tagger):
    assert ("intent", "objection_pain") in codes(tagger, "不会很疼吧？")
    assert ("intent", "objection_pain") not in codes(tagger, "我不怕疼")


def test_colloquial_descriptions(tagger):
    assert ("project", "rhinoplasty") in codes(tagger, "鼻子垫一下要多少钱")
    assert ("concern", "nasolabial_folds") in codes(tagger, "嘴巴两边的纹越来越深")
    assert ("concern", "sagging") in codes(tagger, "脸颊摸着软塌塌的，脸都垮了")
    assert ("project", "ha_filler") in codes(tagger, "Is it safe to do fillers while breastfeeding?")


def test_a_staff_menu_tags_no_project(tagger):
    segs = [
        TextSegment(0, "眼部我们有双眼皮、开眼角、隆鼻、去眼袋这些。", speaker="staff"),
        TextSegment(1, "我就想问问脸上的疤能不能弄平。", speaker="customer"),
    ]
    got = {(a.kind, a.code) for a in tagger.tag(segs)}
    assert not {("project", "double_eyelid"), ("project", "rhinoplasty")} & got
    assert ("concern", "scars") in got


def test_pigmentation_gives_way_to_a_specific_spot(tagger):
    got = codes(tagger, "两颊对称的黄褐斑，脸上斑很多")
    assert ("concern", "melasma") in got and ("concern", "pigmentation") not in got


def test_whole_conversation_offsets_point_into_each_segment(tagger):
    segs = [TextSegment(i, t, speaker="customer") for i, t in enumerate(["你好", "我想做个\n热玛吉", "痘印也想弄"])]
    for a in tagger.tag(segs):
        for e in a.evidence:
            assert segs[e.segment].text.replace("\n", " ")[e.char_start : e.char_end] == e.match
