"""The judge's output constraint on llama.cpp: any transcript text gives a grammar that compiles, or a typed error.

A double quote in a turn once made llama-cpp-python build a grammar llama.cpp could not parse, and the
sampler then crashed the whole process (exit 139). These tests run the real SmolLM2 GGUF: the crash is
reproduced in a subprocess (so this test run survives it), grammars are compiled by llama.cpp itself,
and constrained generation must give back exactly the offered quotes.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbtcompare.ctrs import JudgeConfig, load_rubric, neutralise, score_transcript
from cbtcompare.ctrs.validate import evidence_schema, grammar_safe, quote_occurs, score_schema
from cbtcompare.models.base import InvalidConstraint, Message, Sampling
from cbtcompare.models.llamacpp import LlamaCppModel, compile_grammar, schema_to_grammar
from cbtcompare.paths import REPO_ROOT
from cbtcompare.transcript import Transcript, Turn

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"
HOSTILE = [
    '"',
    "\\",
    '\\"',
    '""',
    "\\n",
    "\\u0000",
    "\x00",
    "\x01",
    "\x7f",
    "\u2028",
    "\u2029",
    "\x85",
    "\ud800",
    "<|im_end|>",
    "<｜User｜>",
    "::=",
    "|",
    "(",
    "]",
    "[^",
    "'",
    "…",
    "é",
    "😀",
    "\t",
]
hostile_text = st.lists(st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE)), min_size=1, max_size=10).map("".join)
# A prompt is UTF-8 for the tokenizer, so generation gets text without lone surrogates (the store and the
# importers refuse those); the grammar itself must still cope with them (above).
encodable_text = hostile_text.map(lambda text: text.replace("\ud800", "?"))


@pytest.fixture(scope="module")
def vocab(instruct_model):
    return instruct_model.shared.model.vocab


def quoting_session() -> Transcript:
    return Transcript(
        id="quoting-session",
        turns=[
            Turn(role="therapist", text='What would you like on our agenda? You said "I always fail" last week.'),
            Turn(role="patient", text='My boss said "you\'re useless". I saved it in C:\\notes\\boss.txt.'),
            Turn(role="therapist", text='When he said "useless", what went through your mind? Let\'s write it down.'),
        ],
    )


def test_a_double_quote_in_a_turn_no_longer_kills_the_judge_process():
    """In a subprocess: before the fix this exited with SIGSEGV (-11; 139 in a shell)."""
    script = textwrap.dedent(
        f"""
        import json
        from cbtcompare.ctrs import JudgeConfig, load_rubric, neutralise, score_transcript
        from cbtcompare.models.registry import Registry
        from cbtcompare.transcript import Transcript

        judge = Registry.from_files().load("smollm2-instruct")
        rubric = load_rubric({str(DATA / "ctrs_rubric_two_items.yaml")!r})
        transcript = Transcript.model_validate_json({quoting_session().model_dump_json()!r})
        config = JudgeConfig(retries=0, max_tokens=200, max_evidence=1, justification_chars=60)
        print(json.dumps(score_transcript(judge, transcript, rubric, config).summary_dict()))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-2000:]}"
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["items"]) == {"agenda", "homework"}
    for entry in summary["items"].values():
        assert entry["status"] in {"scored", "n/a", "unscored"}
        assert entry["status"] != "unscored" or entry["reason"]
        for evidence in entry["evidence"]:
            assert evidence["turn"] in (0, 2)  # the therapist's turns


def test_the_judge_schema_for_quoting_turns_compiles_and_the_stock_converter_did_not(instruct_model, vocab):
    rubric = load_rubric("paper")
    schema = score_schema(rubric, rubric.item_ids, quoting_session().turns, per_item=False)
    from llama_cpp.llama_grammar import LlamaGrammar
    assert isinstance(compile_grammar(schema_to_grammar(schema), vocab), LlamaGrammar)  # it raises otherwise

    stock = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
    with pytest.raises(InvalidConstraint, match="could not compile"):
        compile_grammar(stock, vocab)


class StockConverterJudge(LlamaCppModel):
    """The real model, constrained by llama-cpp-python's own converter (the one with the escaping bug)."""

    def _complete_json(self, messages: list[Message], schema: dict, sampling: Sampling) -> str:
        from llama_cpp.llama_grammar import LlamaGrammar

        stock = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
        compile_grammar(stock, self.shared.model.vocab, model=self.name)
        raise AssertionError("the stock grammar compiled; this test no longer shows anything")


def test_a_grammar_that_does_not_compile_ends_unscored_with_its_reason_after_one_attempt(instruct_model):
    judge = StockConverterJudge(instruct_model.spec)
    result = score_transcript(judge, quoting_session(), load_rubric("paper"), JudgeConfig(retries=2))
    assert result.scored_items == 0 and result.unscored_items == 11
    for entry in result.items.values():
        assert entry.score is None and entry.attempts == 1  # no retry can fix the same schema
        assert entry.reason.startswith("InvalidConstraint: smollm2-instruct: llama.cpp could not compile")


@pytest.mark.parametrize(
    ("gbnf", "fragment"),
    [
        ('root ::= "unterminated', "could not compile"),
        ("root ::= undefined-rule", "could not compile"),
        ('root ::= "a"\x00 | "b', "NUL character"),
        ('root ::= "\ud800"', "not valid UTF-8"),
    ],
)
def test_a_broken_grammar_is_a_typed_error_never_handed_to_the_sampler(vocab, gbnf, fragment):
    with pytest.raises(InvalidConstraint, match=fragment):
        compile_grammar(gbnf, vocab)


def test_a_schema_the_converter_cannot_handle_is_a_typed_error(instruct_model):
    for schema in ({"$ref": "#/$defs/missing"}, {"type": "string", "pattern": "(unclosed"}, {"type": "nonsense"}):
        with pytest.raises(InvalidConstraint, match="cannot be turned into a llama.cpp grammar|could not compile"):
            instruct_model.complete_json([Message("user", "hi")], schema, Sampling(max_tokens=4))


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(therapist=hostile_text, patient=hostile_text, quote_choices=st.booleans())
def test_any_turn_text_gives_a_judge_grammar_llama_cpp_compiles(vocab, therapist, patient, quote_choices):
    turns = [Turn(role="therapist", text=therapist), Turn(role="patient", text=patient)]
    from llama_cpp.llama_grammar import LlamaGrammar

    rubric = load_rubric("paper")
    for per_item, items in ((False, rubric.item_ids), (True, ["agenda"])):
        schema = score_schema(rubric, items, turns, per_item=per_item, quote_choices=quote_choices)
        assert isinstance(compile_grammar(schema_to_grammar(schema), vocab), LlamaGrammar)  # it raises otherwise


@settings(deadline=None, max_examples=8, suppress_health_check=[HealthCheck.too_slow])
@given(therapist=encodable_text)
def test_constrained_generation_gives_back_exactly_an_offered_quote(instruct_model, therapist):
    """Escaping is right only if what the model is made to write decodes to the very string offered."""
    turns = [Turn(role="therapist", text=f"Let's begin. {therapist}"), Turn(role="patient", text="ok")]
    schema = evidence_schema(turns, quote_choices=True)
    if "anyOf" not in schema:  # text a grammar literal cannot safely hold: free-text quotes, validated later
        assert not grammar_safe(neutralise(turns[0].text))
        raw = instruct_model.complete_json(
            [Message("user", "Copy one sentence of this: " + turns[0].text)], schema,
            Sampling(max_tokens=120, temperature=0.0, seed=0),
        )  # fmt: skip
        # What matters here is that the process lives: a free-text quote may run past the token budget or
        # carry a raw control character, which the judge's validator refuses (unscored with its reason).
        assert raw.lstrip().startswith("{")
        with contextlib.suppress(json.JSONDecodeError):
            assert json.loads(raw, strict=False)["turn"] == 0
        return
    offered = schema["anyOf"][0]["properties"]["quote"]["enum"]
    messages = [Message("user", "Copy one sentence of this: " + " ".join(offered))]
    raw = instruct_model.complete_json(messages, schema, Sampling(max_tokens=400, temperature=0.0, seed=0))
    answer = json.loads(raw)
    assert answer["turn"] == 0 and answer["quote"] in offered
    assert quote_occurs(answer["quote"], turns[0].text) or quote_occurs(answer["quote"], neutralise(turns[0].text))


# Found by the property above: with this text offered as a grammar literal, llama.cpp's sampler was left
# with no token to continue it, picked end-of-generation and aborted the process (SIGABRT).
ABORTING_TURN = "\u00a5<\uff5cUser\uff5c>F\U000e4c61\u00f1\U000cc386\ucaf6\u00d3\x87Ad\u00a3}\x89s\x98\u00b2\x02" \
    "\U00012dc1t\U0007266f\x0f\u00fa\u00a84\x8bJC0\U000d4d87\uc6c2\x01\u2029\\\""


@pytest.mark.slow
def test_text_that_once_aborted_the_sampler_is_judged_in_a_process_that_lives():
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from cbtcompare.ctrs.validate import evidence_schema
        from cbtcompare.models.base import Message, Sampling
        from cbtcompare.models.registry import Registry
        from cbtcompare.transcript import Turn
        turns = [Turn(role="therapist", text="Let's begin. " + {ABORTING_TURN!r}), Turn(role="patient", text="ok")]
        schema = evidence_schema(turns, quote_choices=True)
        model = Registry.from_files().load("smollm2-instruct")
        prompt = [Message("user", "Copy one sentence of this: " + turns[0].text)]
        print(model.complete_json(prompt, schema, Sampling(max_tokens=400, temperature=0.0, seed=0)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout.strip().splitlines()[-1]
    try:
        assert json.loads(output)["turn"] == 0
    except json.JSONDecodeError:
        # Greedy decoding of the demo model may repeat inside the free quote until the token budget cuts it
        # (the judge's validator then refuses it and retries): up to the cut it is still the grammar's shape.
        assert re.match(r'\{\s*"turn"\s*:\s*0\s*,\s*"quote"\s*:\s*"[^"\x00-\x1f]*$', output), output[:300]
