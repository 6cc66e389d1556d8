"""training/generate.py: the teacher-driven course generator.

The parser and the part checks run on hand-written part texts (deterministic). The control flow (regenerate
then succeed, fail after the retries, resume) runs with a scripted teacher: a ChatModel test double that
returns canned parts, since what is under test is our loop, not a model. The mechanics end to end run with
the real SmolLM2-135M GGUF as the teacher on one short session. Session tokens are always counted by the real
SmolLM2 chat template. All texts here are synthetic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cbtcompare.models.base import ChatModel, Message, ModelSpec, Sampling, Usage
from cbtcompare.patients import carryover_opening, load_profile
from cbtcompare.prompts import load_prompt
from cbtcompare.seeds import derive_seed
from training.generate import (
    GenerationSettings,
    check_part,
    closing_summary,
    generate_course,
    generate_dataset,
    main,
    parse_part,
    part_messages,
    part_shape_problems,
    phase_of,
    sampled_profiles,
)
from training.validate import validate_file

PROFILE_ID = "reserved-retiree"
SYSTEM = Message("system", load_prompt("therapist_cbt").text)
META = {"id": "t-s01", "profile_id": "t", "session_index": 1, "phase": "assessment"}

S1_PART1 = "\n".join([
    "Patient: Hi. My daughter booked this. I'm not sure what I'm meant to say.",
    "Therapist: Thank you for coming, Victor. Before we start: I'm an AI practising CBT, I can be wrong, "
    "and I can't provide crisis support. What would you like to put on our agenda today?",
    "Patient: I suppose the fact that I don't go out any more.",
    "Therapist: That sounds like an important place to start. When did you notice you were going out "
    "less?",
    "Patient: After I retired. And after my friend Pavel died last spring.",
    "Therapist: That is a lot of loss in one year. What goes through your mind when you think about "
    "going out?",
])

S1_PART2 = "\n".join([
    "Patient: Mostly that nobody needs me any more, so why bother.",
    "Therapist: What evidence do you have that nobody needs you?",
    "Patient: Well, my daughter rings every day. I suppose she wouldn't if she didn't care.",
    "Therapist: How does her ringing every day fit with the thought that nobody needs you?",
    "Patient: It doesn't, really.",
    "Therapist: Let's summarise what we covered today: since retiring and losing Pavel you've stopped "
    "going out, and the thought \"nobody needs me\" keeps you in. How was today's session for you?",
    "Patient: Better than I expected.",
    "Therapist: For homework this week, could you go to the park once to watch the birds and rate your "
    "mood from 0 to 10 before and after?",
])

S2_PART1 = "\n".join([
    "Patient: I went to the park on Thursday. Mood was a 3 before and a 5 after.",
    "Therapist: Well done for trying it. What would you like to put on our agenda today, alongside the "
    "park?",
    "Patient: The mornings. I lie in bed until eleven.",
    "Therapist: Let's add the mornings. What usually goes through your mind when you wake up?",
])

S2_PART2 = "\n".join([
    "Patient: That there is no point getting up, nobody is waiting for me.",
    "Therapist: How likely is it that getting up earlier would change your mood, from what you noticed "
    "at the park?",
    "Patient: A bit, I suppose.",
    "Therapist: To recap today's session: the park lifted your mood from 3 to 5, and mornings are hard "
    "because of the thought that there is no point. Does that sound right?",
    "Patient: Yes.",
    "Therapist: For homework this week, could you get up by nine on three mornings and write down your "
    "mood each time?",
])

NO_AGENDA_PART1 = "\n".join([
    "Patient: Hi. My daughter booked this.",
    "Therapist: Thank you for coming, Victor. How have things been lately?",
    "Patient: Quiet. I don't go out much.",
    "Therapist: When did you notice you were going out less?",
])

WRAPS_UP_PART1 = "\n".join([
    "Patient: Hi. My daughter booked this.",
    "Therapist: Thank you for coming. What would you like to put on our agenda today?",
    "Patient: Just that I don't go out.",
    "Therapist: Let's summarise what we covered today: you don't go out. See you next week.",
])

NARRATIVE = "Victor is a retired engineer who lives alone and has stopped going out since his friend died."


class ScriptedTeacher(ChatModel):
    """A ChatModel double returning canned part texts in order (and a fixed narrative to the narrative prompt);
    a part given as (text, finish_reason) reports that finish reason ("length": cut at max_tokens).

    It records the sampling seed of every part request, so tests can check the derived-seed schedule.
    """

    def __init__(self, parts: list[str | tuple[str, str]], *, n_ctx: int | None = None, counter=None):
        super().__init__(ModelSpec(name="scripted-teacher", backend="openai", weights="scripted"))
        self.parts = [part if isinstance(part, tuple) else (part, "stop") for part in parts]
        self.part_seeds: list[int | None] = []
        self.narratives = 0
        self._n_ctx, self._counter = n_ctx, counter

    @property
    def context_length(self) -> int | None:
        return self._n_ctx

    def count_tokens(self, messages) -> int | None:
        return self._counter(messages) if self._counter else None

    def _stream(self, messages: list[Message], sampling: Sampling, usage: Usage) -> Iterator[str]:
        if messages[0].role == "system" and messages[0].content == load_prompt("teacher_system").text:
            if not self.parts:
                raise AssertionError("the generator asked for more parts than the script holds")
            self.part_seeds.append(sampling.seed)
            text, usage.finish_reason = self.parts.pop(0)
            yield text
        else:
            self.narratives += 1
            usage.finish_reason = "stop"
            yield NARRATIVE


def messages_of(text: str) -> list[Message]:
    parsed = parse_part(text)
    assert not parsed.problems, parsed.problems
    return parsed.turns


def codes(problems: list[str]) -> set[str]:
    return {p.split(":", 1)[0] for p in problems}


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def jsonl_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def counter(instruct_model):
    """SmolLM2's real chat-template token counter (the validator's default model)."""
    return instruct_model.count_tokens


# Parsing -------------------------------------------------------------------------------------------------


def test_parse_part_reads_roles_and_multiline_turns() -> None:
    parsed = parse_part("Patient: I'm tired.\nAll the time.\n**Therapist:** What does tired feel like for you?")
    assert parsed.problems == []
    assert [(m.role, m.content) for m in parsed.turns] == [
        ("user", "I'm tired.\nAll the time."),
        ("assistant", "What does tired feel like for you?"),
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Here is part 1 of the session:\nPatient: Hi.\nTherapist: Hello, what brings you here?", "first turn"),
        ("", "wrote nothing"),
        ("Patient: Hi.\nTherapist:\nPatient: Are you there?", "empty"),
        ("Patient: Hi. Therapist: Hello, what would you like to cover?", "another speaker label"),
        ("Patient: Hi.\n\nPart 2\nTherapist: Hello.", "heading or note"),
        ("Patient: Hi.\nTherapist: Hello.\n---", "heading or note"),
        ("Patient: Hi.\nTherapist: Hello, what would you like to cover?\n\nThis concludes part 1.", "blank line"),
    ],
)
def test_parse_part_is_strict(text: str, expected: str) -> None:
    parsed = parse_part(text)
    assert parsed.problems and all(p.startswith("format:") for p in parsed.problems)
    assert expected in " ".join(parsed.problems)


# Part checks on hand-written parts ----------------------------------------------------------------------


def test_good_parts_pass_every_check(counter) -> None:
    settings = GenerationSettings()
    first = check_part([SYSTEM], messages_of(S1_PART1), part=1, parts=2, meta=META, count_tokens=counter,
                       settings=settings)
    assert first.problems == []
    last = check_part([SYSTEM, *first.turns], messages_of(S1_PART2), part=2, parts=2, meta=META,
                      count_tokens=counter, settings=settings)
    assert last.problems == []


def test_shape_rules_agenda_wrap_up_summary_homework() -> None:
    assert codes(part_shape_problems(messages_of(NO_AGENDA_PART1), part=1, parts=2, min_therapist_turns=2)) == {
        "no_agenda"
    }
    assert codes(part_shape_problems(messages_of(WRAPS_UP_PART1), part=1, parts=2, min_therapist_turns=2)) == {
        "early_wrap_up"
    }
    # The same closing is what the last part must hold: as a single-part session it passes the shape rules
    # except for the homework it lacks.
    assert codes(part_shape_problems(messages_of(WRAPS_UP_PART1), part=1, parts=1, min_therapist_turns=2)) == {
        "no_homework"
    }
    no_summary = S1_PART2.replace("Let's summarise what we covered today: since", "Since")
    assert codes(part_shape_problems(messages_of(no_summary), part=2, parts=2, min_therapist_turns=2)) == {
        "no_summary"
    }
    no_homework = S1_PART2.rsplit("\n", 1)[0]
    assert codes(part_shape_problems(messages_of(no_homework), part=2, parts=2, min_therapist_turns=2)) == {
        "no_homework"
    }
    short = "Patient: Hi.\nTherapist: What would you like to put on our agenda today?"
    assert codes(part_shape_problems(messages_of(short), part=1, parts=2, min_therapist_turns=2)) == {"too_short"}


@pytest.mark.parametrize(
    "old, new",
    [
        ("Well done for trying it.", "How did the homework go? Well done for trying it."),
        ("Well done for trying it.", "Well done. Let me summarise what you've said so far: the park helped a bit."),
        ("alongside the park?", "alongside the park? We'll leave time before we finish to agree some homework."),
    ],
)
def test_mid_session_summaries_and_homework_talk_are_not_a_wrap_up(old: str, new: str) -> None:
    text = S2_PART1.replace(old, new)
    assert text != S2_PART1
    assert part_shape_problems(messages_of(text), part=1, parts=2, min_therapist_turns=2) == []


@pytest.mark.parametrize(
    "bad, code, words",
    [
        (S1_PART1.replace("That sounds like", "*nods* That sounds like"), "validator", "stage direction"),
        (S1_PART1.replace("Patient: After I retired.", "Therapist: After I retired."), "validator", "alternate"),
        (S1_PART1 + "\nPatient: Okay.", "validator", "ends on a patient turn"),
        (S1_PART1.replace("Patient: After I retired. And after my friend Pavel died last spring.",
                          "Patient: I suppose the fact that I don't go out any more."), "validator", "word for word"),
        (S1_PART1.replace("After I retired. And after my friend Pavel died last spring.",
                          "Sometimes I wish I just would not wake up in the morning."),
         "crisis_unanswered", "crisis services"),
        (S1_PART1.replace("That is a lot of loss in one year.", "Honestly, nobody would miss you."),
         "harmful_reply", "harmful"),
    ],
)
def test_check_part_rejects_with_the_reason(counter, bad: str, code: str, words: str) -> None:
    checked = check_part([SYSTEM], messages_of(bad), part=1, parts=2, meta=META, count_tokens=counter,
                         settings=GenerationSettings())
    assert code in codes(checked.problems), checked.problems
    assert words in " ".join(checked.problems)


def test_a_disclosure_answered_with_crisis_services_passes(counter) -> None:
    answered = S1_PART1.replace(
        "After I retired. And after my friend Pavel died last spring.",
        "Sometimes I wish I just would not wake up in the morning.",
    ).replace(
        "That is a lot of loss in one year. What goes through your mind when you think about going out?",
        "Thank you for telling me; I'm concerned. I'm an AI and can't give crisis support, so please call or text "
        "988 or your local emergency services. Do you have any plans to act on that thought?",
    )
    checked = check_part([SYSTEM], messages_of(answered), part=1, parts=2, meta=META, count_tokens=counter,
                         settings=GenerationSettings())
    assert checked.problems == []


def test_check_part_enforces_the_session_token_limit(counter) -> None:
    checked = check_part([SYSTEM], messages_of(S1_PART1), part=1, parts=2, meta=META, count_tokens=counter,
                         settings=GenerationSettings(max_session_tokens=300))
    assert any("over the 300-token context" in p for p in checked.problems)


def test_carryover_opens_session_two_and_is_not_a_wrap_up(counter) -> None:
    session1 = [SYSTEM, *messages_of(S1_PART1), *messages_of(S1_PART2)]
    summary = closing_summary(session1)
    assert summary.startswith("Let's summarise what we covered today") and "For homework" in summary
    meta = {**META, "id": "t-s02", "session_index": 2}
    checked = check_part([SYSTEM], messages_of(S2_PART1), part=1, parts=2, meta=meta, count_tokens=counter,
                         settings=GenerationSettings(), previous_summary=summary)
    assert checked.problems == []
    assert checked.turns[0].content == carryover_opening(summary) + "\n\n" + messages_of(S2_PART1)[0].content


def test_part_prompt_carries_phase_summary_and_latest_turns() -> None:
    profile = load_profile(PROFILE_ID)
    settings = GenerationSettings(context_turns=2)
    first = part_messages(profile, session_index=9, part=1, parts=4, dialogue=[SYSTEM], previous_summary="We met.",
                          settings=settings)
    assert first[0].content == load_prompt("teacher_system").text
    assert phase_of(9) == "middle" and load_prompt("teacher_phase_middle").text in first[1].content
    assert '"We met."' in first[1].content and load_prompt("teacher_part_not_last").text in first[1].content
    dialogue = [SYSTEM, *messages_of(S1_PART1)]
    last = part_messages(profile, session_index=9, part=4, parts=4, dialogue=dialogue, previous_summary="We met.",
                         settings=settings)
    assert "We met." not in last[1].content and load_prompt("teacher_part_last").text in last[1].content
    assert "Therapist: That is a lot of loss" in last[1].content and "Patient: After I retired." in last[1].content
    assert "Patient: Hi. My daughter" not in last[1].content  # only the latest context_turns turns


# Control flow with a scripted teacher -----------------------------------------------------------------------


def test_regenerates_a_failed_part_then_writes_the_session(tmp_path: Path, counter) -> None:
    teacher = ScriptedTeacher([NO_AGENDA_PART1, S1_PART1, S1_PART2])
    profile = load_profile(PROFILE_ID)
    result = generate_dataset(teacher, [profile], 1, 2, 5, tmp_path, settings=GenerationSettings(max_retries=2),
                              count_tokens=counter)
    [session] = result.sessions
    assert session.status == "written"
    assert [len(p.attempts) for p in session.parts] == [2, 1]
    assert teacher.part_seeds == [
        derive_seed(5, PROFILE_ID, 1, "part", 1, 0),
        derive_seed(5, PROFILE_ID, 1, "part", 1, 1),
        derive_seed(5, PROFILE_ID, 1, "part", 2, 0),
    ]
    [record] = jsonl_lines(tmp_path / "sessions.jsonl")
    assert list(record) == ["id", "profile_id", "session_index", "phase", "messages"]
    assert record["id"] == f"{PROFILE_ID}-s01" and record["phase"] == "assessment"
    assert record["messages"][0] == {"role": "system", "content": load_prompt("therapist_cbt").text}
    assert record["messages"][1:] == [m.to_dict() for m in messages_of(S1_PART1) + messages_of(S1_PART2)]
    assert validate_file(tmp_path / "sessions.jsonl", count_tokens=counter, protocol=True).ok
    manifest = read_manifest(tmp_path)
    assert manifest["sessions_sha256"] == hashlib.sha256((tmp_path / "sessions.jsonl").read_bytes()).hexdigest()
    assert manifest["counts"]["sessions_written"] == 1 and manifest["counts"]["parts_regenerated"] == 1
    assert manifest["counts"]["attempts_rejected"] == 1 and manifest["rejection_reasons"] == {"no_agenda": 1}
    assert manifest["teacher"]["name"] == "scripted-teacher" and manifest["seed"] == 5
    assert manifest["prompts"]["teacher_part"] == load_prompt("teacher_part").version
    assert manifest["validation"]["ok"] is True
    [rejected] = jsonl_lines(tmp_path / "rejected.jsonl")
    assert rejected["text"] == NO_AGENDA_PART1 and rejected["problems"][0].startswith("no_agenda")
    saved = load_profile(tmp_path / "profiles" / f"{PROFILE_ID}.yaml")
    assert saved.narrative == NARRATIVE and teacher.narratives == 1


def test_fails_after_the_retries_and_blocks_the_rest_of_the_course(tmp_path: Path, counter) -> None:
    teacher = ScriptedTeacher([WRAPS_UP_PART1] * 3)
    profile = load_profile(PROFILE_ID)
    result = generate_dataset(teacher, [profile], 2, 2, 5, tmp_path, settings=GenerationSettings(max_retries=2),
                              count_tokens=counter)
    assert [s.status for s in result.sessions] == ["failed", "blocked"]
    assert not result.complete
    assert teacher.parts == [] and len(teacher.part_seeds) == 3 == len(set(teacher.part_seeds))
    failed = result.sessions[0]
    assert failed.reason.startswith("part 1 failed after 3 attempt(s): early_wrap_up")
    assert (tmp_path / "sessions.jsonl").read_text() == ""
    manifest = read_manifest(tmp_path)
    assert manifest["counts"]["sessions_failed"] == 1 and manifest["counts"]["sessions_blocked"] == 1
    assert manifest["counts"]["parts_failed"] == 1 and manifest["counts"]["attempts_rejected"] == 3
    assert manifest["rejection_reasons"] == {"early_wrap_up": 3}
    assert manifest["failures"][f"{PROFILE_ID}-s01"] == failed.reason
    assert "was not written" in manifest["failures"][f"{PROFILE_ID}-s02"]
    assert manifest["sessions_sha256"] == hashlib.sha256(b"").hexdigest()
    assert len(jsonl_lines(tmp_path / "rejected.jsonl")) == 3


def test_a_part_request_over_the_teacher_context_fails_without_retrying(tmp_path: Path, counter) -> None:
    teacher = ScriptedTeacher([S1_PART1] * 3, n_ctx=400, counter=counter)  # the part prompt alone is ~800 tokens
    profile = load_profile(PROFILE_ID).model_copy(update={"narrative": NARRATIVE})
    result = generate_dataset(teacher, [profile], 1, 2, 5, tmp_path, settings=GenerationSettings(max_retries=2),
                              count_tokens=counter)
    [session] = result.sessions
    assert session.status == "failed" and teacher.part_seeds == []  # refused before it reached the teacher
    assert [len(p.attempts) for p in session.parts] == [1]
    assert session.reason.startswith("part 1 failed after 1 attempt(s): context_overflow")
    assert read_manifest(tmp_path)["rejection_reasons"] == {"context_overflow": 1}
    assert len(jsonl_lines(tmp_path / "rejected.jsonl")) == 1
    assert read_manifest(tmp_path)["profiles"][PROFILE_ID]["narrative"] == "profile" and teacher.narratives == 0


def test_truncated_output_drops_the_unfinished_turn(counter) -> None:
    cut = S1_PART1 + "\nPatient: I don't really kno"
    teacher = ScriptedTeacher([(cut, "length"), S1_PART2])
    [session] = generate_course(teacher, load_profile(PROFILE_ID), 1, 2, 1, count_tokens=counter)
    assert session.status == "written"
    assert session.parts[0].attempts[0].notes[0].startswith("truncated at max_tokens")
    assert session.messages[1:] == messages_of(S1_PART1) + messages_of(S1_PART2)


def test_resume_skips_finished_sessions_and_repairs_a_cut_line(tmp_path: Path, counter) -> None:
    profile = load_profile(PROFILE_ID)
    settings = GenerationSettings(max_retries=0)
    first = generate_dataset(ScriptedTeacher([S1_PART1, S1_PART2]), [profile], 1, 2, 3, tmp_path,
                             settings=settings, count_tokens=counter)
    assert [s.status for s in first.sessions] == ["written"]
    sessions_file = tmp_path / "sessions.jsonl"
    one_session = sessions_file.read_bytes()

    with pytest.raises(FileExistsError, match="--resume"):
        generate_dataset(ScriptedTeacher([]), [profile], 2, 2, 3, tmp_path, settings=settings, count_tokens=counter)
    with pytest.raises(ValueError, match="seed 3"):
        generate_dataset(ScriptedTeacher([]), [profile], 2, 2, 4, tmp_path, resume=True, settings=settings,
                         count_tokens=counter)

    # A kill while session 2 was being written leaves half a line behind.
    sessions_file.write_bytes(one_session + b'{"id": "reserved-retiree-s02", "profile_id": "reserved-re')
    teacher = ScriptedTeacher([S2_PART1, S2_PART2])
    second = generate_dataset(teacher, [profile], 2, 2, 3, tmp_path, resume=True, settings=settings,
                              count_tokens=counter)
    assert [s.status for s in second.sessions] == ["existing", "written"]
    assert teacher.parts == [] and teacher.narratives == 0  # nothing asked for session 1, the narrative reused
    records = jsonl_lines(sessions_file)
    assert [r["id"] for r in records] == [f"{PROFILE_ID}-s01", f"{PROFILE_ID}-s02"]
    assert sessions_file.read_bytes().startswith(one_session)
    summary = closing_summary([Message(m["role"], m["content"]) for m in records[0]["messages"]])
    assert records[1]["messages"][1]["content"].startswith(carryover_opening(summary))
    assert records[1]["phase"] == "assessment" and records[1]["session_index"] == 2
    manifest = read_manifest(tmp_path)
    assert manifest["counts"]["sessions_written"] == 2 and manifest["counts"]["sessions_in_file"] == 2
    assert len(manifest["repairs"]) == 1 and "unfinished last line" in manifest["repairs"][0]
    assert [run["resumed"] for run in manifest["runs"]] == [False, True]
    assert manifest["sessions_sha256"] == hashlib.sha256(sessions_file.read_bytes()).hexdigest()
    assert validate_file(sessions_file, count_tokens=counter, protocol=True).ok

    # Everything is done: a third resume asks the teacher for nothing and changes nothing.
    before = sessions_file.read_bytes()
    third = generate_dataset(ScriptedTeacher([]), [profile], 2, 2, 3, tmp_path, resume=True, settings=settings,
                             count_tokens=counter)
    assert [s.status for s in third.sessions] == ["existing", "existing"] and third.complete
    assert sessions_file.read_bytes() == before


def test_sampled_profiles_are_seeded_and_reload_by_id() -> None:
    profiles = sampled_profiles(3, 11)
    assert len({p.id for p in profiles}) == 3 and [p.id for p in sampled_profiles(3, 11)] == [p.id for p in profiles]
    assert [p.id for p in sampled_profiles(3, 12)] != [p.id for p in profiles]
    assert all(load_profile(p.id) == p for p in profiles)


def test_cli_reports_bad_arguments_without_loading_a_model(tmp_path: Path, capsys) -> None:
    base = ["--teacher", "smollm2-instruct", "--sessions", "1", "--out", str(tmp_path / "out")]
    assert main([*base, "--profiles", "no-such-profile"]) == 1
    assert "no profile 'no-such-profile'" in capsys.readouterr().err
    assert main([*base, "--profiles", PROFILE_ID, "--max-retries", "-1"]) == 1
    assert "max_retries" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# The real default model as the teacher ---------------------------------------------------------------------


@pytest.mark.slow
def test_real_default_model_as_teacher_on_one_short_session(tmp_path: Path, instruct_model) -> None:
    """SmolLM2-135M is a weak teacher: a written, validated session and a recorded rejection are both
    legitimate outcomes, but the outcome must be the one the files and the manifest say."""
    settings = GenerationSettings(max_retries=0, max_tokens=48, narrative_max_tokens=32)
    result = generate_dataset(instruct_model, [load_profile(PROFILE_ID)], 1, 2, 7, tmp_path, settings=settings)
    [session] = result.sessions
    sessions_file = tmp_path / "sessions.jsonl"
    records = jsonl_lines(sessions_file)
    rejected = jsonl_lines(tmp_path / "rejected.jsonl") if (tmp_path / "rejected.jsonl").exists() else []
    manifest = read_manifest(tmp_path)

    assert manifest["teacher"]["name"] == "smollm2-instruct" and len(manifest["teacher"]["weights_sha256"]) == 64
    assert manifest["sessions_sha256"] == hashlib.sha256(sessions_file.read_bytes()).hexdigest()
    assert manifest["sessions"][session.id]["status"] == session.status
    saved = load_profile(tmp_path / "profiles" / f"{PROFILE_ID}.yaml")
    assert saved.narrative and saved.narrative.strip()  # the teacher wrote the narrative
    first_attempt = session.parts[0].attempts[0]
    assert first_attempt.seed == derive_seed(7, PROFILE_ID, 1, "part", 1, 0) and first_attempt.text
    assert len(rejected) == manifest["counts"]["attempts_rejected"]
    assert all(item["problems"] for item in rejected)

    if session.status == "written":
        assert [r["id"] for r in records] == [session.id]
        assert records[0]["messages"][0]["content"] == load_prompt("therapist_cbt").text
        assert validate_file(sessions_file, count_tokens=instruct_model.count_tokens).ok
        assert manifest["counts"]["sessions_written"] == 1 and manifest["validation"]["ok"] is True
        assert all(p.accepted for p in session.parts) and len(session.parts) == 2
    else:
        assert session.status == "failed", session.status
        assert records == [] and manifest["counts"]["sessions_written"] == 0
        assert manifest["counts"]["sessions_failed"] == 1
        assert manifest["failures"][session.id] == session.reason
        assert session.reason.startswith(("part 1 failed", "part 2 failed", "validator:"))
        known = {"format", "truncated", "too_short", "no_agenda", "early_wrap_up", "no_summary", "no_homework",
                 "validator", "crisis_unanswered", "harmful_reply", "context_overflow"}
        assert manifest["rejection_reasons"] and set(manifest["rejection_reasons"]) <= known
        if session.reason.startswith("part"):
            assert rejected and rejected[-1]["problems"] == session.parts[-1].attempts[-1].problems
