"""JSON schema -> llama.cpp grammar, escaped and compiled once before a sampler may use it."""

from __future__ import annotations

import json
import re

from cbtcompare.models.base import InvalidConstraint
from cbtcompare.models.llamacpp_pool import llama_cpp_library

# llama-cpp-python's converter escapes `"` but not `\` inside a literal, so any enum value holding a
# double quote (its JSON text holds `\"`) yields a grammar llama.cpp cannot parse, and a grammar that
# fails to parse crashes the process inside the sampler (exit 139). Every literal is escaped here.
_GBNF_LITERAL_SPECIAL = re.compile(r'[\r\n"\\]')
_GBNF_LITERAL_ESCAPES = {"\r": "\\r", "\n": "\\n", '"': '\\"', "\\": "\\\\"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal that matches exactly these characters."""
    return '"' + _GBNF_LITERAL_SPECIAL.sub(lambda m: _GBNF_LITERAL_ESCAPES[m.group(0)], text) + '"'


def _json_text(value: object) -> str:
    """The JSON text a constrained model must write for `value`: raw Unicode, control characters escaped."""
    text = json.dumps(value, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)  # a lone surrogate has no UTF-8


def schema_to_grammar(schema: dict, *, model: str | None = None) -> str:
    """A GBNF grammar for `schema`; InvalidConstraint when the schema cannot be converted."""
    from llama_cpp import llama_grammar

    class EscapingConverter(llama_grammar.SchemaConverter):
        def _format_literal(self, literal: str) -> str:
            return gbnf_literal(literal)

        def _generate_constant_rule(self, value: object) -> str:
            return gbnf_literal(_json_text(value))

    converter = EscapingConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "schema")
        converter.visit(resolved, "")
        return converter.format_grammar()
    except (ValueError, TypeError, KeyError, AssertionError, RecursionError) as exc:
        raise InvalidConstraint(
            f"the JSON schema cannot be turned into a llama.cpp grammar ({type(exc).__name__}: {str(exc)[:200]}); "
            "simplify the schema",
            model=model,
        ) from exc


def compile_grammar(gbnf: str, vocab: object, *, model: str | None = None) -> object:
    """Have llama.cpp parse `gbnf` once against `vocab`; the LlamaGrammar only when it parsed.

    llama-cpp-python hands a grammar to the sampler unchecked, and a sampler built from one that failed
    to parse is a null pointer the process dies on; a grammar that does not compile never gets there.
    """
    lib = llama_cpp_library()
    from llama_cpp.llama_grammar import LlamaGrammar

    if "\x00" in gbnf:  # a C string would end there and llama.cpp would parse only the part before it
        raise InvalidConstraint("the grammar holds a NUL character; it was not used", model=model)
    try:
        encoded = gbnf.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidConstraint(f"the grammar is not valid UTF-8 ({exc.reason}); it was not used", model=model) from exc
    sampler = lib.llama_sampler_init_grammar(vocab, encoded, b"root")
    if not sampler:
        raise InvalidConstraint(
            f"llama.cpp could not compile the {len(encoded)}-byte grammar built from the JSON schema; it was not "
            "used (llama.cpp's parse error is on stderr)",
            model=model,
        )
    lib.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(gbnf, verbose=False)
