import re

import pytest

from tagging import Taxonomy, TaxonomyError

# every code ../shared/DOMAIN.md names: the taxonomy must cover all of them, spelled exactly so
DOMAIN_CODES = {
    "project": """thermage hifu skin_booster ha_filler botulinum ipl picosecond fractional_laser
        laser_hair_removal whitening_injection double_eyelid eye_bag_surgery rhinoplasty liposuction
        fat_grafting thread_lift face_lift breast_augmentation hair_transplant acne_treatment
        facial_cleansing eyebrow_tattoo mole_removal scar_treatment freckle_removal other_laser""",
    "concern": """acne acne_marks melasma sun_spots freckles wrinkles nasolabial_folds eye_bags dark_circles
        large_pores sagging dull_skin dryness sensitive_redness double_chin wide_jaw eye_shape nose_shape
        body_hair body_fat hair_loss scars moles body_odor breast_shape pigmentation""",
    "intent": """price_inquiry booking purchase_ready undecided objection_price objection_pain
        objection_safety objection_downtime effect_duration doctor_choice competitor_compare
        promotion_interest referral repurchase aftercare_complaint effect_inquiry seeking_recommendation""",
}


@pytest.mark.parametrize("kind", DOMAIN_CODES)
def test_every_domain_code_is_present(taxonomy, kind):
    assert {c.code for c in taxonomy.of_kind(kind)} == set(DOMAIN_CODES[kind].split())


def test_codes_labels_and_terms_are_well_formed(taxonomy):
    assert re.match(r"^\d{4}\.\d+\.\d+$", taxonomy.version)
    for code in taxonomy.codes.values():
        assert re.match(r"^[a-z][a-z0-9_]*$", code.code)
        assert code.label and code.label_en
        assert len(code.terms) >= 3, code.code
        for term, _ in code.terms:
            assert len(term) >= 2, (code.code, term)


def test_a_term_belongs_to_one_code_per_family(taxonomy):
    for kind in DOMAIN_CODES:
        seen = {}
        for code in taxonomy.of_kind(kind):
            for term, _ in code.terms:
                assert seen.setdefault(term, code.code) == code.code, f"{term!r} under {seen[term]} and {code.code}"


def test_hotwords_are_short_treatment_names(taxonomy):
    hw = taxonomy.hotwords()
    assert "热玛吉" in hw and "超声刀" in hw and len(hw) <= 80


def test_bad_taxonomy_files_fail_clearly(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("version: 1\nfamilies:\n  project:\n    codes:\n      Bad-Code: {label: x}\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="not snake_case"):
        Taxonomy.load(bad)
    bad.write_text("families: {}\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="'version'"):
        Taxonomy.load(bad)
    with pytest.raises(TaxonomyError, match="cannot read"):
        Taxonomy.load(tmp_path / "missing.yaml")
