"""The contract corpus: raw outputs (test notation, see helpers.py) -> expected message.

IDs follow mistral-formats.md §4 where a case comes from there (A*, B*, C*, D*, E*, F*);
``X*`` cases are our own. Every case runs for each (tokenizer kind, parser) pair listed and
through every split strategy (test_contract.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from parsers import ParseOptions

V11 = (("v11-tekken", "mistral_v11"),)
V13 = (("v13-tekken", "mistral_v13"),)
MAG = (("v11-tekken", "magistral_text_think"),)
V11P = V11 + V13 + MAG  # every parser of the v11+ tool format
PRE = tuple((k, "mistral_pre_v11") for k in ("v3-spm", "v7-spm", "v3-tekken", "v7-tekken"))
ALL = PRE + V11P

TOOLS = ParseOptions(tools=True)
NO_TOOLS = ParseOptions(tools=False)
SINGLE = ParseOptions(tools=True, parallel_tool_calls=False)
NO_REASONING = ParseOptions(tools=True, reasoning=False)


@dataclass(frozen=True)
class Case:
    id: str
    raw: str
    parsers: tuple[tuple[str, str], ...]
    content: str | None = None
    reasoning: str | None = None
    calls: tuple[tuple[str, str], ...] = ()
    truncated: bool = False
    options: ParseOptions = TOOLS
    call_ids: tuple[str | None, ...] | None = None  # expected ids (None: generated)
    allow_markers: bool = False
    allow_fffd: bool = False


W = '{"city": "Paris"}'

CASES: list[Case] = [
    # ------------------------------------------------------------------ plain content (all)
    Case("X-plain", "Hello world, how are you?", ALL, content="Hello world, how are you?"),
    Case("E5-refusal", "I can't do that.", ALL, content="I can't do that."),
    Case("X-cjk-bytes", "Weather: ⟦B:雨🌧️ 中文⟧ ok", ALL, content="Weather: 雨🌧️ 中文 ok"),
    Case("X-emoji-tokens", "Résumé 😀👍🏽 ありがとう", ALL, content="Résumé 😀👍🏽 ありがとう"),
    Case("X-leading-ws-kept", "\n\nHello", ALL, content="\n\nHello"),
    Case("X-trailing-ws-kept", "Hello\n\n", ALL, content="Hello\n\n"),
    Case("X-ws-only", "\n \n", ALL, content="\n \n"),
    Case("F5-open-bracket", "Pick one of [", ALL, content="Pick one of ["),
    Case("X-eos-bos-ignored", "⟦BOS⟧Hi there⟦EOS⟧", ALL, content="Hi there"),
    Case("X-other-control-dropped", "Hi⟦INST⟧ there", ALL, content="Hi there"),
    Case("X-incomplete-utf8-at-end", "ok ⟦X:e4b8⟧", ALL, content="ok \ufffd", allow_fffd=True),
    Case("X-incomplete-utf8-before-special", "a⟦X:f09f⟧⟦TC⟧", V11P, content="a\ufffd",
         allow_fffd=True, options=NO_TOOLS),
    Case("X-invalid-utf8-in-args", '⟦TC⟧f⟦ARGS⟧{"a": "⟦X:ff⟧"}', V11P,
         calls=(("f", '{"a": "\ufffd"}'),), allow_fffd=True),
    Case("A23-plain-marker-text", "To call a tool write [TOOL_CALLS]name[ARGS]{...}.", ALL,
         content="To call a tool write [TOOL_CALLS]name[ARGS]{...}.", allow_markers=True),
    Case("X-empty", "", ALL, content=None),
    # ------------------------------------------------------------------ v11+ tool calls
    Case("A1", f"⟦TC⟧get_weather⟦ARGS⟧{W}", V11P, calls=(("get_weather", W),)),
    Case("F1-content-then-call", f"Let me check.⟦TC⟧get_weather⟦ARGS⟧{W}", V11P,
         content="Let me check.", calls=(("get_weather", W),)),
    Case("A3-ws-content", "\n\n⟦TC⟧get_time⟦ARGS⟧{}", V11P, calls=(("get_time", "{}"),)),
    Case("X-content-rstripped", "Sure.\n\n⟦TC⟧get_time⟦ARGS⟧{}", V11P, content="Sure.",
         calls=(("get_time", "{}"),)),
    Case("A4-parallel", '⟦TC⟧a⟦ARGS⟧{"x": 1}⟦TC⟧b⟦ARGS⟧{"y": [2, 3]}', V11P,
         calls=(("a", '{"x": 1}'), ("b", '{"y": [2, 3]}'))),
    Case("A5-parallel-off", '⟦TC⟧a⟦ARGS⟧{"x": 1}⟦TC⟧b⟦ARGS⟧{"y": 2}⟦TC⟧c⟦ARGS⟧{}', V11P,
         calls=(("a", '{"x": 1}'),), options=SINGLE),
    Case("X-call-id-kept", "⟦TC⟧f⟦CID⟧abcDEF123⟦ARGS⟧{}", V11 + V13, calls=(("f", "{}"),),
         call_ids=("abcDEF123",)),
    Case("X-call-id-dup-invalid",
         "⟦TC⟧f⟦CID⟧abcDEF123⟦ARGS⟧{}⟦TC⟧g⟦CID⟧abcDEF123⟦ARGS⟧{}⟦TC⟧h⟦CID⟧ab_cd-ef1⟦ARGS⟧{}",
         V11 + V13, calls=(("f", "{}"), ("g", "{}"), ("h", "{}")),
         call_ids=("abcDEF123", None, None)),
    Case("X-call-id-no-args", "⟦TC⟧f⟦CID⟧abcDEF123", V11, calls=(("f", "{}"),),
         call_ids=("abcDEF123",)),
    Case("A7-brackets-in-strings",
         '⟦TC⟧run_jq⟦ARGS⟧{"filter": ".items[] | {id: .id, t: [.t[0]]}", '
         '"note": "use } and ] with care"}', V11P,
         calls=(("run_jq", '{"filter": ".items[] | {id: .id, t: [.t[0]]}", '
                 '"note": "use } and ] with care"}'),)),
    Case("X-escapes", r'⟦TC⟧f⟦ARGS⟧{"q": "say \"hi\" \\ \u00e9 \n}{", "r": "\\"}', V11P,
         calls=(("f", r'{"q": "say \"hi\" \\ \u00e9 \n}{", "r": "\\"}'),)),
    Case("A9-inner-markers-plain",
         '⟦TC⟧write_file⟦ARGS⟧{"path": "a.md", "content": "Mistral emits [TOOL_CALLS]f[ARGS]{...}"}',
         V11P, calls=(("write_file",
                       '{"path": "a.md", "content": "Mistral emits [TOOL_CALLS]f[ARGS]{...}"}'),),
         allow_markers=True),
    Case("A11-numbers-byte-exact",
         '⟦TC⟧calc⟦ARGS⟧{"a": 3, "b": 2.50, "c": 1e3, "d": -0, "big": 123456789012345678901234567890}',
         V11P, calls=(("calc",
                       '{"a": 3, "b": 2.50, "c": 1e3, "d": -0, "big": 123456789012345678901234567890}'),)),
    Case("A13-no-args", "⟦TC⟧get_time", V11P, calls=(("get_time", "{}"),)),
    Case("X-args-marker-then-eos", "⟦TC⟧get_time⟦ARGS⟧  ⟦EOS⟧", V11P, calls=(("get_time", "{}"),)),
    Case("A15-trailing-text", '⟦TC⟧search⟦ARGS⟧{"q": "vllm"}\n\nI\'ll look that up.', V11P,
         content="I'll look that up.", calls=(("search", '{"q": "vllm"}'),)),
    Case("X-content-and-trailing", 'Hi.⟦TC⟧s⟦ARGS⟧{"q": 1} Bye.', V11P, content="Hi. Bye.",
         calls=(("s", '{"q": 1}'),)),
    Case("X-trailing-ws-only", '⟦TC⟧s⟦ARGS⟧{"q": 1}\n\n  ', V11P, calls=(("s", '{"q": 1}'),)),
    Case("A17-truncated", '⟦TC⟧write_file⟦ARGS⟧{"path": "a.py", "content": "def f(', V11P,
         calls=(("write_file", '{"path": "a.py", "content": "def f('),), truncated=True),
    Case("X-truncated-in-escape", r'⟦TC⟧f⟦ARGS⟧{"a": "x\\', V11P,
         calls=(("f", r'{"a": "x\\'),), truncated=True),
    Case("X-cut-by-next-call", '⟦TC⟧f⟦ARGS⟧{"a": ⟦TC⟧g⟦ARGS⟧{}', V11P,
         calls=(("f", '{"a": '), ("g", "{}"))),
    Case("A21-name-chars", '⟦TC⟧fs-read_v2⟦ARGS⟧{"p": "/x"}', V11P,
         calls=(("fs-read_v2", '{"p": "/x"}'),)),
    Case("X-name-args-ws", '⟦TC⟧  get_weather \n⟦ARGS⟧ \n{"a": 1}  ', V11P,
         calls=(("get_weather", '{"a": 1}'),)),
    Case("X-string-args", '⟦TC⟧a_a_a⟦ARGS⟧"blabla"⟦TC⟧b⟦ARGS⟧"blu"', V11P,
         calls=(("a_a_a", '"blabla"'), ("b", '"blu"'))),
    Case("X-scalar-args", "⟦TC⟧f⟦ARGS⟧42⟦TC⟧g⟦ARGS⟧true", V11P,
         calls=(("f", "42"), ("g", "true"))),
    Case("X-scalar-then-text", "⟦TC⟧f⟦ARGS⟧-1.5e3 done", V11P, content="done",
         calls=(("f", "-1.5e3"),)),
    Case("X-array-args", '⟦TC⟧f⟦ARGS⟧[1, {"a": "]"}]', V11P, calls=(("f", '[1, {"a": "]"}]'),)),
    Case("X-missing-args-token-brace", f"⟦TC⟧get_weather{W}", V11P, calls=(("get_weather", W),)),
    Case("X-empty-name-dropped", '⟦TC⟧⟦ARGS⟧{"a": 1}⟦TC⟧ok⟦ARGS⟧{}', V11P, calls=(("ok", "{}"),)),
    Case("X-args-bytes-split", '⟦TC⟧f⟦ARGS⟧{"t": "⟦B:世界🌧️ é⟧", "n": "⟦B:👍🏽⟧"}', V11P,
         calls=(("f", '{"t": "世界🌧️ é", "n": "👍🏽"}'),)),
    Case("X-args-emoji-tokens", '⟦TC⟧f⟦ARGS⟧{"t": "雨が降る 🌧️ ☔"}', V11P,
         calls=(("f", '{"t": "雨が降る 🌧️ ☔"}'),)),
    Case("X-nested-deep", '⟦TC⟧f⟦ARGS⟧{"a": {"b": {"c": [[{"d": "{[\\"]}"}]]}}}', V11P,
         calls=(("f", '{"a": {"b": {"c": [[{"d": "{[\\"]}"}]]}}}'),)),
    Case("X-eos-after-call", f"⟦TC⟧get_weather⟦ARGS⟧{W}⟦EOS⟧", V11P, calls=(("get_weather", W),)),
    Case("X-extra-args-token", f"⟦TC⟧f⟦ARGS⟧⟦ARGS⟧{W}⟦ARGS⟧", V11P, calls=(("f", W),)),
    Case("E1-tools-none", "⟦TC⟧f⟦ARGS⟧{}", V11P, options=NO_TOOLS),
    Case("E1-tools-none-content", "Hello\n⟦TC⟧f⟦ARGS⟧{} and more", V11P, content="Hello",
         options=NO_TOOLS),
    Case("E3-named", f"⟦TC⟧get_weather⟦ARGS⟧{W}", V11P, calls=(("get_weather", W),)),
    Case("X-parallel-off-trailing", '⟦TC⟧a⟦ARGS⟧{}⟦TC⟧b⟦ARGS⟧{} tail', V11P, content="tail",
         calls=(("a", "{}"),), options=SINGLE),
    # ------------------------------------------------------------------ v13 reasoning
    Case("C1", "⟦T⟧The user wants X.⟦/T⟧Answer.", V13, reasoning="The user wants X.",
         content="Answer."),
    Case("C3-unclosed", "⟦T⟧Let me count: 1, 2, 3", V13, reasoning="Let me count: 1, 2, 3"),
    Case("C5-orphan-end", "I think X⟦/T⟧Answer", V13, content="I think XAnswer"),
    Case("C7-ws-before-think", "\n⟦T⟧r⟦/T⟧\nanswer", V13, reasoning="r", content="\nanswer"),
    Case("C9-plain-marker-text", "[THINK]more[/THINK]Done.", V13,
         content="[THINK]more[/THINK]Done.", allow_markers=True),
    Case("C11-duplicate-start", "⟦T⟧⟦T⟧nested⟦/T⟧x", V13, reasoning="nested", content="x"),
    Case("C11b-duplicate-mid", "⟦T⟧a ⟦T⟧b⟦/T⟧x", V13, reasoning="a b", content="x"),
    Case("X-reasoning-ws-stripped", "⟦T⟧\n  a  b \n\n⟦/T⟧b", V13, reasoning="a  b", content="b"),
    Case("X-reasoning-two-blocks", "⟦T⟧a ⟦/T⟧mid⟦T⟧ b⟦/T⟧end", V13, reasoning="a\nb",
         content="midend"),
    Case("X-content-around-think", "Hi ⟦T⟧r⟦/T⟧ there", V13, reasoning="r", content="Hi  there"),
    Case("X-empty-think", "⟦T⟧⟦/T⟧ok", V13, content="ok"),
    Case("X-reasoning-bytes-split", "⟦T⟧think ⟦B:雨🌧️⟧ more⟦/T⟧ok", V13,
         reasoning="think 雨🌧️ more", content="ok"),
    Case("X-reasoning-off", "⟦T⟧secret⟦/T⟧ok", V13, content="ok", options=NO_REASONING),
    Case("D1", f"⟦T⟧Need weather.⟦/T⟧⟦TC⟧get_weather⟦ARGS⟧{W}", V13, reasoning="Need weather.",
         calls=(("get_weather", W),)),
    Case("D3-implicit-end", f"⟦T⟧I'll check the weather⟦TC⟧get_weather⟦ARGS⟧{W}", V13,
         reasoning="I'll check the weather", calls=(("get_weather", W),)),
    Case("D7-truncated", '⟦T⟧r⟦/T⟧⟦TC⟧f⟦ARGS⟧{"a": "x', V13, reasoning="r",
         calls=(("f", '{"a": "x'),), truncated=True),
    Case("X-think-ws-then-call", "⟦T⟧r⟦/T⟧\n\n⟦TC⟧f⟦ARGS⟧{}", V13, reasoning="r",
         calls=(("f", "{}"),)),
    Case("X-think-content-call", "⟦T⟧r⟦/T⟧Sure.⟦TC⟧f⟦ARGS⟧{}", V13, reasoning="r",
         content="Sure.", calls=(("f", "{}"),)),
    Case("X-think-after-call", '⟦TC⟧f⟦ARGS⟧{"a": 1}⟦T⟧more⟦/T⟧done', V13, reasoning="more",
         content="done", calls=(("f", '{"a": 1}'),)),
    Case("X-think-interrupts-args", '⟦TC⟧f⟦ARGS⟧{"a": ⟦T⟧hm⟦/T⟧x', V13, reasoning="hm",
         content="x", calls=(("f", '{"a": '),)),
    Case("X-think-tools-none", "⟦T⟧r⟦/T⟧⟦TC⟧f⟦ARGS⟧{}", V13, reasoning="r", options=NO_TOOLS),
    Case("X-think-markers-in-v11-args", '⟦TC⟧f⟦ARGS⟧{"s": "[THINK]x[/THINK]"}', V13,
         calls=(("f", '{"s": "[THINK]x[/THINK]"}'),), allow_markers=True),
    # ------------------------------------------------------------------ text <think> (Magistral 2506)
    Case("M-basic", "<think>\nthoughts here\n</think>\n\nanswer", MAG, reasoning="thoughts here",
         content="\n\nanswer"),
    Case("M-leading-ws", "  \n<think>x</think>y", MAG, reasoning="x", content="y"),
    Case("M-not-at-start", "Hello <think>x</think>", MAG, content="Hello <think>x</think>",
         allow_markers=True),
    Case("M-unclosed", "<think>unclosed thoughts", MAG, reasoning="unclosed thoughts"),
    Case("M-partial-open", "<thi", MAG, content="<thi"),
    Case("M-partial-close", "<think>a</thin", MAG, reasoning="a</thin"),
    Case("M-second-block-is-content", "<think>x</think>y<think>z</think>", MAG, reasoning="x",
         content="y<think>z</think>", allow_markers=True),
    Case("M-implicit-end", "<think>need a tool⟦TC⟧f⟦ARGS⟧{}", MAG, reasoning="need a tool",
         calls=(("f", "{}"),)),
    Case("M-then-call", f"<think>r</think>\n⟦TC⟧get_weather⟦ARGS⟧{W}", MAG, reasoning="r",
         calls=(("get_weather", W),)),
    Case("M-bytes", "<think>⟦B:雨🌧️</think>⟧ok", MAG, reasoning="雨🌧️", content="ok"),
    Case("M-reasoning-off", "<think>secret</think>ok", MAG, content="ok", options=NO_REASONING),
    Case("M-think-like", "<thinking>not it</thinking>", MAG, content="<thinking>not it</thinking>",
         allow_markers=True),
    # ------------------------------------------------------------------ pre-v11 JSON array
    Case("B1", '⟦TC⟧ [{"name": "add", "arguments": {"a": 1, "b": 2}}]', PRE,
         calls=(("add", '{"a": 1, "b": 2}'),)),
    Case("B1-no-space", '⟦TC⟧[{"name": "add", "arguments": {"a": 1, "b": 2}}]', PRE,
         calls=(("add", '{"a": 1, "b": 2}'),)),
    Case("B3-dup-ids-after-args",
         '⟦TC⟧[{"name": "add", "arguments": {"a": 1}, "id": "Xy7Qp2LmZ"}, '
         '{"name": "add", "arguments": {"a": 2}, "id": "Xy7Qp2LmZ"}]', PRE,
         calls=(("add", '{"a": 1}'), ("add", '{"a": 2}'))),
    Case("B3-dup-ids-before-args",
         '⟦TC⟧[{"name": "add", "id": "Xy7Qp2LmZ", "arguments": {"a": 1}}, '
         '{"id": "Xy7Qp2LmZ", "name": "add", "arguments": {"a": 2}}, '
         '{"id": "bad_id", "name": "add"}]', PRE,
         calls=(("add", '{"a": 1}'), ("add", '{"a": 2}'), ("add", "{}")),
         call_ids=("Xy7Qp2LmZ", None, None)),
    Case("X-id-after-name-no-args", '⟦TC⟧[{"name": "f", "id": "abcDEF123"}]', PRE,
         calls=(("f", "{}"),), call_ids=("abcDEF123",)),
    Case("B5-string-args", '⟦TC⟧ [{"name": "f", "arguments": "{\\"a\\": 1}"}]', PRE,
         calls=(("f", '{"a": 1}'),)),
    Case("X-string-args-not-object", '⟦TC⟧[{"name": "f", "arguments": "hello"}]', PRE,
         calls=(("f", '"hello"'),)),
    Case("B7-bare-object", '⟦TC⟧ {"name": "f", "arguments": {"x": 1}}', PRE,
         calls=(("f", '{"x": 1}'),)),
    Case("B9-trailing", '⟦TC⟧ [{"name": "f", "arguments": {"city": "Dallas"}}]\nextra trailing data',
         PRE, content="extra trailing data", calls=(("f", '{"city": "Dallas"}'),)),
    Case("B11-truncated", 'Let me see.⟦TC⟧ [{"name": "f", "arguments": {"q": "abc', PRE,
         content="Let me see.", calls=(("f", '{"q": "abc'),), truncated=True),
    Case("X-truncated-string-args", '⟦TC⟧[{"name": "f", "arguments": "{\\"a', PRE,
         calls=(("f", '"{\\"a'),), truncated=True),
    Case("X-truncated-before-args", '⟦TC⟧[{"name": "f", "argu', PRE, calls=(("f", "{}"),)),
    Case("X-truncated-before-name", '⟦TC⟧[{"arguments": {"a": 1}, "na', PRE),
    Case("B13-content", 'Hello⟦TC⟧ [{"name": "add", "arguments": {"a": 1, "b": 2}}]', PRE,
         content="Hello", calls=(("add", '{"a": 1, "b": 2}'),)),
    Case("B15-spacing", '⟦TC⟧  [ {"name":"add" , "arguments" : {"a": 3, "b": 4} } ]', PRE,
         calls=(("add", '{"a": 3, "b": 4}'),)),
    Case("B17-empty-array", "⟦TC⟧ []", PRE),
    Case("X-args-before-name", '⟦TC⟧[{"arguments": {"x": [1, {"y": "}"}]}, "name": "f"}]', PRE,
         calls=(("f", '{"x": [1, {"y": "}"}]}'),)),
    Case("X-missing-args", '⟦TC⟧[{"name": "f"}, {"name": "g", "arguments": {}}]', PRE,
         calls=(("f", "{}"), ("g", "{}"))),
    Case("X-two-segments", '⟦TC⟧[{"name": "a", "arguments": {}}]⟦TC⟧[{"name": "b", "arguments": {"k": 1}}]',
         PRE, calls=(("a", "{}"), ("b", '{"k": 1}'))),
    Case("X-segment-cut", '⟦TC⟧[{"name": "a", "arguments": {"k": ⟦TC⟧[{"name": "b"}]', PRE,
         calls=(("a", '{"k": '), ("b", "{}"))),
    Case("X-not-json", "⟦TC⟧ sorry, no tool", PRE, content="sorry, no tool"),
    Case("X-nameless-dropped", '⟦TC⟧[{"arguments": {"a": 1}}, {"name": "g", "arguments": {}}]', PRE,
         calls=(("g", "{}"),)),
    Case("X-non-object-elements", '⟦TC⟧["junk", 3, [1, "]"], {"name": "g", "arguments": {}}]', PRE,
         calls=(("g", "{}"),)),
    Case("X-malformed-member", "⟦TC⟧[{'name': 'f', 'arguments': {}}, {\"name\": \"g\"}]", PRE,
         calls=(("g", "{}"),)),
    Case("X-missing-value", '⟦TC⟧[{"name": , "x": 1}, {"name": "g", "arguments": }]', PRE,
         calls=(("g", "{}"),)),
    Case("X-numbers-byte-exact", '⟦TC⟧[{"name": "c", "arguments": {"a": 2.50, "c": 1e3, "d": -0}}]',
         PRE, calls=(("c", '{"a": 2.50, "c": 1e3, "d": -0}'),)),
    Case("X-name-escape", '⟦TC⟧[{"name": "f\\u005fx", "arguments": {"s": "\\"}\\\\"}}]', PRE,
         calls=(("f_x", '{"s": "\\"}\\\\"}'),)),
    Case("X-pre-bytes-split", '⟦TC⟧[{"name": "f", "arguments": {"t": "⟦B:世界🌧️⟧"}}]', PRE,
         calls=(("f", '{"t": "世界🌧️"}'),)),
    Case("X-pre-content-cjk", "天気は？⟦TC⟧[{\"name\": \"w\", \"arguments\": {\"c\": \"東京\"}}]", PRE,
         content="天気は？", calls=(("w", '{"c": "東京"}'),)),
    Case("X-pre-parallel-off",
         '⟦TC⟧[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]', PRE,
         calls=(("a", "{}"),), options=SINGLE),
    Case("X-pre-tools-none", 'Hi⟦TC⟧[{"name": "a", "arguments": {}}] more', PRE, content="Hi",
         options=NO_TOOLS),
    Case("X-pre-null-args", '⟦TC⟧[{"name": "a", "arguments": null}]', PRE, calls=(("a", "null"),)),
    Case("X-pre-parameters-alias", '⟦TC⟧[{"name": "a", "parameters": {"p": 1}}]', PRE,
         calls=(("a", '{"p": 1}'),)),
    Case("X-pre-dup-keys", '⟦TC⟧[{"name": "a", "name": "b", "arguments": {"x": 1}, "arguments": {"y": 2}}]',
         PRE, calls=(("a", '{"x": 1}'),)),
    Case("X-pre-trailing-after-bare", '⟦TC⟧{"name": "f", "arguments": {}} then text', PRE,
         content="then text", calls=(("f", "{}"),)),
    Case("X-pre-marker-text-in-args",
         '⟦TC⟧[{"name": "w", "arguments": {"s": "[TOOL_CALLS] [{\\"name\\": 1}]"}}]', PRE,
         calls=(("w", '{"s": "[TOOL_CALLS] [{\\"name\\": 1}]"}'),), allow_markers=True),
    Case("X-pre-eos", '⟦TC⟧[{"name": "a", "arguments": {}}]⟦EOS⟧', PRE, calls=(("a", "{}"),)),
]
