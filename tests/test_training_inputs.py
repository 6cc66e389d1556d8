"""Training input nobody wrote by hand: datasets (deep JSON, huge integers, separator characters, template
tokens) and settings (`--set` values as YAML reads them). Each ends in a result or a typed error that names
the line or the field; never a traceback, a hang or a changed file."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_training import SESSIONS, write_sessions

from training.config import ConfigError, TrainConfig, field_help, parse_override
from training.validate import ValidationReport, model_token_counter, validate_file

REPO = Path(__file__).resolve().parent.parent
DEEP = "[" * 3000 + "]" * 3000
HUGE = 2**64 + 1


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def session_line(index: int, **changes: object) -> str:
    record: dict[str, object] = {
        "id": f"s{index}", "profile_id": "p", "session_index": 1, "phase": "assessment",
        "messages": [{"role": "system", "content": "You are a CBT practice assistant."},
                     {"role": "user", "content": f"I felt low on day {index}."},
                     {"role": "assistant", "content": f"What went through your mind on day {index}?"}],
    }
    record.update(changes)
    return json.dumps(record, ensure_ascii=False)


@pytest.fixture(scope="module")
def count_tokens():
    """The real token counter: the default SmolLM2 GGUF's chat template, loaded once."""
    return model_token_counter()


# --- the validator from the command line ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_validator_names_the_line_of_deep_json_and_huge_integers(tmp_path):
    path = write_sessions(tmp_path / "sessions.jsonl", SESSIONS[:1])
    lines = [
        DEEP,
        session_line(3, messages=json.loads("[" * 60 + "]" * 60)),
        session_line(4, session_index=HUGE),
        session_line(5, id=HUGE, phase=[HUGE]),
        '{"id": ' + "9" * 5000 + "}",
        session_line(7, messages=[{"role": "user", "content": "x"}] + [{"role": "assistant", "content": {"a": HUGE}}]),
    ]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    before = path.read_bytes()
    done = run_module("training.validate", str(path))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    out = done.stdout
    assert "line 2: error: JSON nested 3000 levels deep" in out
    assert "line 3: error: messages[0] is not an object with 'role' and 'content'" in out
    assert f"line 4: error: 'phase' 'assessment' does not match session_index {HUGE}" in out
    assert "line 5: error: 'id' must be a non-empty string" in out and "line 5: error: 'phase' is [" in out
    assert "line 6: error: not usable JSON: Exceeds the limit (4300 digits)" in out
    assert "line 7: error: messages[1] (therapist) 'content' must be a string" in out
    assert "line 1: error" not in out
    assert path.read_bytes() == before


def test_a_session_quoting_a_line_separator_is_one_line(tmp_path, count_tokens):
    path = tmp_path / "separators.jsonl"
    said = "I wrote it down:\u2028first line\u2029second\u0085third\x0bfourth\x1cfifth"
    path.write_text(session_line(1) + "\n" + session_line(2, messages=[
        {"role": "user", "content": said}, {"role": "assistant", "content": "Thank you for writing that."}]) + "\n",
        encoding="utf-8")
    report = validate_file(path, count_tokens=count_tokens)
    assert report.ok, report.format()
    assert report.counts["sessions"] == 2 and report.counts["valid_sessions"] == 2


# --- the validator on arbitrary lines ------------------------------------------------------------------------

TRICKY = ["\u2028", "\u2029", "\u0085", "\x00", "\x1b", '"', "\\", "\\u0000", "<|im_start|>", "<|im_end|>",
          "<｜begin▁of▁sentence｜>", "<｜User｜>", "[INST]", "{{", "}}", "{%", "Therapist:", "\r", "\t", "\ufeff"]
tricky_text = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(TRICKY)), max_size=8).map("".join)
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**300),
                   st.floats(allow_nan=True, allow_infinity=True), tricky_text)
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(tricky_text, inner, max_size=4), max_leaves=20)
turn = st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["system", "user", "assistant"]), json_values),
                              "content": st.one_of(tricky_text, json_values)})
session_shaped = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(turn, max_size=6), json_values)},
    optional={"id": json_values, "profile_id": json_values, "session_index": json_values, "phase": json_values},
)


def nested(depth: int, bracket: str) -> str:
    """Valid JSON nested `depth` levels: lists, or objects."""
    return "[" * depth + "]" * depth if bracket == "[" else '{"a": ' * depth + "1" + "}" * depth


any_line = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    session_shaped.map(lambda v: json.dumps(v, ensure_ascii=False)),
    session_shaped.map(json.dumps),
    st.integers(min_value=1, max_value=6000).flatmap(lambda d: st.sampled_from([nested(d, "["), nested(d, "{")])),
    tricky_text,
)


def validate_lines(lines: list[str], count_tokens) -> tuple[ValidationReport, list[str]]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        before = path.read_bytes()
        report = validate_file(path, max_tokens=100_000, count_tokens=count_tokens)
        assert path.read_bytes() == before  # the validator only reads
        # bytes, not read_text: universal newlines would turn a lone "\r" inside a line into a line break
        return report, path.read_bytes().decode("utf-8").split("\n")[:-1]


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(any_line.filter(lambda line: "\n" not in line), min_size=1, max_size=5))
def test_any_lines_give_a_report_with_line_numbers_never_an_exception(lines, count_tokens):
    report, written = validate_lines(lines, count_tokens)
    assert len(written) == len(lines)
    assert all(0 <= line <= len(lines) for line, _ in report.errors + report.warnings)
    for number, text in enumerate(lines, start=1):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            value = None
            if text.strip():
                assert number in report.error_lines(), (number, text[:80], report.format())
        if text.strip() and not (isinstance(value, dict) and "messages" in value):
            assert number in report.error_lines(), (number, text[:80], report.format())
    assert report.format().startswith(report.path)


words = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), min_size=1, max_size=40)
content = st.lists(st.one_of(words, st.sampled_from(TRICKY)), min_size=1, max_size=6).map("".join).filter(
    lambda text: text.strip() != "")


@settings(deadline=None, max_examples=40)
@given(turns=st.lists(content, min_size=2, max_size=6, unique_by=lambda t: " ".join(t.split())))
def test_well_formed_sessions_of_any_text_are_valid(turns, count_tokens):
    turns = turns[: len(turns) // 2 * 2]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    line = session_line(1, messages=[{"role": "system", "content": "CBT practice."}, *messages])
    report, _ = validate_lines([line], count_tokens)
    assert report.ok, report.format()
    assert report.counts["valid_sessions"] == 1 and report.counts["therapist_turns"] == len(turns) // 2


# --- training on such a dataset ------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_on_deep_json_fails_with_the_line_not_a_traceback(tmp_path, monkeypatch, default_gguf):
    from training.jobs import start_job, wait_for
    from training.train_lora import gguf_as_transformers_folder

    gguf_as_transformers_folder(default_gguf)
    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path / "data"))
    dataset = write_sessions(tmp_path / "deep.jsonl")
    dataset.write_text(dataset.read_text() + DEEP + "\n" + session_line(5, session_index=HUGE) + "\n")
    config = TrainConfig(name="deep-cbt", dataset=str(dataset), max_steps=2, max_seq_len=128,
                         runs_dir=str(tmp_path / "runs"), adapters_dir=str(tmp_path / "adapters"))
    failed = wait_for(start_job(config).run_dir, timeout_s=900)
    assert failed.state == "failed", failed.summary()
    assert "line 4: error: JSON nested 3000 levels deep" in failed.error, failed.error
    assert "line 5: error:" in failed.error and "RecursionError" not in failed.error
    assert "Traceback" not in (failed.run_dir / "stdout.log").read_text()
    assert not (tmp_path / "adapters").exists()


# --- settings ------------------------------------------------------------------------------------------------


def test_numbers_written_as_yaml_reads_them_are_coerced_by_the_field_type():
    config = TrainConfig.from_yaml("smollm2-135m-cpu", dict(parse_override(item) for item in (
        "learning_rate=2e-4", "lora_alpha=16", "max_steps=7.0", "qlora=false", "name=123")))
    assert config.learning_rate == 2e-4 and isinstance(config.learning_rate, float)
    assert config.lora_alpha == 16.0 and config.max_steps == 7 and isinstance(config.max_steps, int)
    assert config.name == "123" and config.qlora is False
    saved = TrainConfig.from_dict(config.to_dict())
    assert saved == config
    assert all(field_help().values()), "every setting carries help text"


@pytest.mark.parametrize(("override", "field", "needle"), [
    ("learning_rate=fast", "learning_rate", "valid number"),
    ("max_steps=2.5", "max_steps", "valid integer"),
    ("lora_r=[1, 2]", "lora_r", "valid integer"),
    (f"seed={2**64}", "seed", "too large"),
    (f"max_steps={2**63}", "max_steps", "too large"),
    ("learning_rate=.inf", "learning_rate", "finite"),
    ("target_modules=q_proj", "target_modules", "valid list"),
    ("precision=fp8", "precision", "auto"),
])
def test_a_bad_setting_is_a_config_error_naming_the_field(override, field, needle):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml("smollm2-135m-cpu", dict([parse_override(override)]))
    message = str(caught.value)
    assert f": {field}:" in message and needle in message, message


@settings(deadline=None, max_examples=80)
@given(key=st.sampled_from(sorted(field_help())), raw=tricky_text)
def test_any_set_value_gives_a_config_or_a_config_error(key, raw):
    try:
        config = TrainConfig.from_yaml("smollm2-135m-cpu", dict([parse_override(f"{key}={raw}")]))
    except ConfigError as exc:
        assert key in str(exc) or "--set" in str(exc), str(exc)
    else:
        assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.slow
def test_the_trainer_refuses_a_bad_value_by_name_and_takes_2e_minus_4():
    bad = run_module("training.train_lora", "--config", "smollm2-135m-cpu", "--set", "learning_rate=fast")
    assert bad.returncode == 2 and "learning_rate" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    shown = run_module("cbtcompare", "train", "start", "--set", "learning_rate=2e-4", "--set", "lora_r=0")
    assert shown.returncode == 2 and "lora_r" in shown.stderr and "TypeError" not in shown.stderr, shown.stderr
