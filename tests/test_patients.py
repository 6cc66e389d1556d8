"""Patient profiles: the curated set, the seeded sampler, import with field-naming errors, the patient prompt,
and the clean-up and fidelity checks applied to what a patient model writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cbtcompare.models.base import Sampling
from cbtcompare.patients import (
    ENGAGEMENTS,
    SEVERITIES,
    STYLES,
    PatientProfile,
    ProfileInvalid,
    attribute_lists,
    clean_turn,
    curated_profiles,
    expand_narrative,
    fidelity_summary,
    import_profiles,
    list_profiles,
    load_profile,
    mentions_crisis_resources,
    parse_profiles,
    patient_prompt_versions,
    patient_system_prompt,
    patient_turn_problems,
    profile_yaml,
    render_profile,
    sample_profile,
)
from cbtcompare.safety import detect_crisis


def valid_profile_dict() -> dict:
    return load_profile("nurse-burnout").model_dump(mode="json", exclude_none=True)


# Curated profiles ----------------------------------------------------------------------------------------


def test_curated_profiles_cover_every_severity_style_and_engagement():
    profiles = curated_profiles()
    assert len(profiles) >= 12
    assert len({p.id for p in profiles}) == len(profiles)
    assert {p.symptom_severity for p in profiles} == set(SEVERITIES)
    assert {p.style for p in profiles} == set(STYLES)
    assert {p.engagement for p in profiles} == set(ENGAGEMENTS)
    assert any(p.style == "reserved" for p in profiles) and any(p.style == "tangent" for p in profiles)


def test_the_passive_si_profile_discloses_mid_session_in_words_the_crisis_screen_catches():
    disclosing = [p for p in curated_profiles() if p.disclosure and p.disclosure.kind == "passive_suicidal_ideation"]
    assert disclosing, "no curated profile discloses passive suicidal ideation"
    for profile in disclosing:
        assert profile.disclosure.at_turn >= 1  # mid-session, never the opening
        result = detect_crisis(profile.disclosure.statement)
        assert result.crisis and "suicidal_ideation" in result.categories, profile.id
        assert profile.opening is None or not detect_crisis(profile.opening).crisis


def test_a_prompted_disclosure_is_rendered_at_its_turn_only():
    profile = load_profile("prompted-si-student")
    at = profile.disclosure.at_turn
    assert profile.disclosure.statement in patient_system_prompt(profile, reply_index=at)
    assert profile.disclosure.statement not in patient_system_prompt(profile, reply_index=at - 1)
    assert profile.disclosure.statement not in patient_system_prompt(profile, reply_index=at + 1)


def test_the_patient_prompt_renders_the_profile_style_and_end_marker():
    profile = load_profile("tangent-chef")
    prompt = patient_system_prompt(profile, session_index=3)
    assert "You are Rosa." in prompt
    assert "wander" in prompt  # the tangent style's own words
    assert "[END]" in prompt and "session 3" in prompt
    assert "AI" in prompt and "first person" in prompt
    assert "$" not in prompt
    for thought in profile.automatic_thoughts:
        assert thought in prompt
    versions = patient_prompt_versions(profile)
    assert versions["patient_style_tangent"].startswith("patient_style_tangent@")
    assert versions["patient_system"].startswith("patient_system@")
    assert "patient_disclosure" not in versions


def test_a_narrative_when_present_is_part_of_the_rendered_profile():
    profile = load_profile("nurse-burnout").model_copy(update={"narrative": "Maya grew up in Leeds."})
    assert "Your story: Maya grew up in Leeds." in render_profile(profile)
    assert "Your story" not in render_profile(load_profile("nurse-burnout"))


# The sampler --------------------------------------------------------------------------------------------


def test_the_sampler_is_seeded_and_draws_from_the_attribute_lists():
    lists = attribute_lists()
    assert sample_profile(5) == sample_profile(5)
    assert load_profile("sampled-5") == sample_profile(5)
    profiles = [sample_profile(seed) for seed in range(150)]
    assert len({p.model_dump_json(exclude={"id", "source"}) for p in profiles}) == 150
    maladaptive, adaptive = set(lists["coping_maladaptive"]), set(lists["coping_adaptive"])
    for p in profiles:
        assert 1 <= len(p.life_events) <= 3 and 2 <= len(p.hobbies) <= 5
        assert 2 <= len(p.personality_traits) <= 4 and 2 <= len(p.coping_mechanisms) <= 4
        assert set(p.coping_mechanisms) & maladaptive and set(p.coping_mechanisms) & adaptive
        assert set(p.coping_mechanisms) <= maladaptive | adaptive
        assert p.phq9_band in lists["phq9_bands_by_severity"][p.symptom_severity]
        assert p.occupation in lists["occupations"] and set(p.hobbies) <= set(lists["hobbies"])
        assert p.source == f"sampled:{p.id.removeprefix('sampled-')}@{lists.digest}"
    assert {p.style for p in profiles} == set(STYLES)
    assert {p.age_band for p in profiles} == set(lists["age_bands"])


# Validation and import ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"style": "angry"}, "style", "plain"),
        ({"hobbies": ["chess"]}, "hobbies", "at least 2"),
        ({"life_events": ["a", "b", "c", "d"]}, "life_events", "at most 3"),
        ({"hobies": ["chess", "golf"]}, "hobies", "Extra inputs"),
        ({"age_band": "30"}, "age_band", "18-25"),
        ({"disclosure": {"at_turn": 0, "statement": "I want to disappear"}}, "disclosure.at_turn", "greater than"),
        ({"core_beliefs": ["  "]}, "core_beliefs", "blank"),
        ({"id": "Has Spaces"}, "id", "pattern"),
    ],
)
def test_validation_errors_name_the_field(change, field, words):
    data = valid_profile_dict() | change
    with pytest.raises(ProfileInvalid) as caught:
        parse_profiles(yaml.safe_dump(data), source="upload.yaml")
    message = str(caught.value)
    # One formatter for every config error (cbtcompare.config_errors): `FILE: FIELD: what is wrong`.
    assert message.startswith("upload.yaml")
    assert f": {field}: " in message and words.lower() in message.lower()


def test_a_missing_field_is_named_and_every_problem_is_listed():
    data = valid_profile_dict()
    del data["phq9_band"]
    data["engagement"] = "very"
    with pytest.raises(ProfileInvalid) as caught:
        parse_profiles(json.dumps(data), source="upload.json")
    assert "upload.json (nurse-burnout): phq9_band: field required" in str(caught.value)
    assert "upload.json (nurse-burnout): engagement: " in str(caught.value)


def test_files_that_are_not_profiles_are_refused_with_a_reason():
    with pytest.raises(ProfileInvalid, match="neither valid YAML nor JSON"):
        parse_profiles("id: [unclosed", source="bad.yaml")
    with pytest.raises(ProfileInvalid, match="expected a mapping"):
        parse_profiles("- just a string", source="list.yaml")
    with pytest.raises(ProfileInvalid, match="holds no profiles"):
        parse_profiles("", source="empty.yaml")
    duplicate = {"profiles": [valid_profile_dict(), valid_profile_dict()]}
    with pytest.raises(ProfileInvalid, match="two.yaml: id: 'nurse-burnout' appears more than once"):
        parse_profiles(yaml.safe_dump(duplicate), source="two.yaml")
    second_bad = [valid_profile_dict() | {"id": "one"}, valid_profile_dict() | {"id": "two", "style": "loud"}]
    with pytest.raises(ProfileInvalid, match=r"many.json, profile #2 \(two\): style: "):
        parse_profiles(json.dumps(second_bad), source="many.json")


def test_imported_profiles_are_saved_and_found_by_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path / "data"))
    upload = tmp_path / "mine.json"
    mine = [valid_profile_dict() | {"id": "my-patient-1", "name": "Ana"}, sample_profile(9).model_dump(mode="json")]
    upload.write_text(json.dumps({"profiles": mine}), encoding="utf-8")
    imported = import_profiles(upload, save=True)
    assert [p.id for p in imported] == ["my-patient-1", "sampled-9"]
    assert imported[0].source == "imported" and imported[1].source.startswith("sampled:")
    assert load_profile("my-patient-1").name == "Ana"
    ids = [p.id for p in list_profiles()]
    assert "my-patient-1" in ids and ids.index("my-patient-1") >= len(curated_profiles())
    with pytest.raises(KeyError, match="known profiles: .*nurse-burnout"):
        load_profile("no-such-patient")
    with pytest.raises(FileNotFoundError):
        load_profile(tmp_path / "missing.yaml")


def test_a_profile_round_trips_through_yaml_and_reads_as_a_card():
    profile = load_profile("passive-si-warehouse")
    assert parse_profiles(profile_yaml(profile))[0] == profile
    card = profile.card()
    assert "**Sam**" in card and "passive suicidal ideation at reply 2" in card


# Clean-up and fidelity -----------------------------------------------------------------------------------


def test_clean_up_strips_labels_and_the_end_marker_and_cuts_the_other_side():
    cleaned = clean_turn("Patient: Thanks, see you next week. [END]", "patient")
    assert cleaned.text == "Thanks, see you next week." and cleaned.ended and cleaned.stripped_label
    cleaned = clean_turn("**Client:** I slept badly.\nTherapist: How many hours did you sleep?", "patient")
    assert cleaned.text == "I slept badly." and cleaned.cut_other_role and cleaned.stripped_label
    cleaned = clean_turn("Therapist: What would you like to focus on? Patient: My job.", "therapist")
    assert cleaned.text == "What would you like to focus on?" and cleaned.cut_other_role
    assert clean_turn("Bye for now. [end]", "patient").ended
    plain = clean_turn("  I guess it's been a hard week.  ", "patient")
    assert plain.text == "I guess it's been a hard week." and not (plain.ended or plain.stripped_label)


def test_fidelity_checks_flag_ai_talk_therapist_voice_echo_and_repetition():
    therapist = "What went through your mind when your manager said that in the meeting?"

    def problems(text: str, earlier: tuple[str, ...] = ()) -> list[str]:
        return patient_turn_problems(text, previous_therapist=therapist, earlier_patient=earlier)

    assert problems("As an AI language model, I don't have a manager.") == ["ai_talk"]
    assert problems("How can I help you today? Tell me what brings you here.") == ["therapist_voice"]
    assert "echo" in problems("What went through your mind when your manager said that in the meeting?")
    earlier = ("I thought that I was going to be fired on the spot.",)
    assert problems("I thought that I was going to be fired on the spot!", earlier) == ["repetition"]
    assert problems("   ") == ["empty"]
    assert problems("I thought he was right: I'm useless at this job.", earlier) == []
    starts_as_therapist = clean_turn("Therapist: And how did that feel?", "patient")
    assert "therapist_voice" in patient_turn_problems(
        starts_as_therapist.text, previous_therapist=None, earlier_patient=(), cleaned=starts_as_therapist
    )
    summary = fidelity_summary([["ai_talk"], [], ["echo", "repetition"]], labels_stripped=1, other_role_cut=0)
    assert summary["checked_turns"] == 3 and summary["ai_talk"] == 1 and summary["echo"] == 1
    assert summary["ok"] is False and fidelity_summary([[]], labels_stripped=0, other_role_cut=0)["ok"] is True


def test_crisis_resource_mentions_are_recognised():
    assert mentions_crisis_resources("Please call or text 988, the Suicide & Crisis Lifeline, right now.")
    assert mentions_crisis_resources("Could you contact emergency services or a local helpline?")
    assert not mentions_crisis_resources("Let's look at what happened at work this week.")


# Narrative expansion (the paper's step) ------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_model_expands_a_sampled_profile_into_a_narrative(instruct_model):
    profile = sample_profile(21)
    expanded = expand_narrative(profile, instruct_model, seed=3, sampling=Sampling(max_tokens=24, temperature=0.7))
    assert expanded.narrative and expanded.narrative.strip()
    assert expanded.model_dump(exclude={"narrative"}) == profile.model_dump(exclude={"narrative"})
    assert isinstance(expanded, PatientProfile) and f"Your story: {expanded.narrative.strip()}" in render_profile(
        expanded
    )
