"""Constrained decoding through the real clients: OpenAI `response_format` (json_object, json_schema) and
`tool_choice` (required, a named function), Ollama `format` ("json", a schema).

The hard case is the random tiny model sampling at temperature 1: left alone it writes noise, so every valid
answer below comes from the grammar. One check on SmolLM2 shows a real model filling a schema sensibly.
"""

from __future__ import annotations

import json

import jsonschema
import ollama
import openai
import pytest

from athanor.engine.sampling_params import SamplingParams
from athanor.runtime.llm import LLM
from athanor.text.grammar import GrammarError, tool_call_style

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 12},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "role": {"enum": ["admin", "user", "guest"]},
    "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}},
    "required": ["name", "age", "role", "tags"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
              "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "add", "parameters": {
             "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
             "required": ["a", "b"], "additionalProperties": False}}}]
QUESTION = [{"role": "user", "content": "Tell me about someone."}]
SAMPLED = {"temperature": 1.0, "max_tokens": 120}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tiny_llm(tiny_hf_dir):
    return LLM.load(str(tiny_hf_dir))


def test_every_sampled_answer_matches_the_schema(client):
    for seed in range(4):
        r = client.chat.completions.create(model="tiny", messages=QUESTION, seed=seed, **SAMPLED,
                                           response_format={"type": "json_schema",
                                                            "json_schema": {"name": "person", "schema": PERSON}})
        choice = r.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_object_streamed_equals_whole(client):
    """Any object: unbounded strings may run into max_tokens (then the text is a cut-off object, as with OpenAI);
    every answer that stops is an object."""
    stopped = 0
    for seed in range(4):
        kw = {"model": "tiny", "messages": QUESTION, "seed": seed, "temperature": 1.0, "max_tokens": 200,
              "response_format": {"type": "json_object"}}
        whole = client.chat.completions.create(**kw).choices[0]
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                           if c.choices)
        assert streamed == whole.message.content and streamed.startswith("{")
        if whole.finish_reason == "stop":
            stopped += 1
            assert isinstance(json.loads(streamed), dict)
        else:
            assert whole.finish_reason == "length"
    assert stopped >= 1


def test_n_choices_each_follow_the_grammar(client):
    r = client.chat.completions.create(model="tiny", messages=QUESTION, n=3, seed=5, **SAMPLED,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "p", "schema": PERSON}})
    answers = [json.loads(c.message.content) for c in r.choices]
    for a in answers:
        jsonschema.validate(a, PERSON)
    assert len({json.dumps(a) for a in answers}) > 1  # each choice walks its own matcher


def test_required_tool_choice_always_gives_valid_calls(client):
    """Every call that comes back matches its schema. A sampled reply may run into max_tokens while writing a
    further (parallel) call: then finish_reason is `length`, the open call is dropped and no markup leaks."""
    finished = 0
    for seed in range(4):
        r = client.chat.completions.create(model="tiny", messages=QUESTION, tools=TOOLS, tool_choice="required",
                                           seed=seed, **SAMPLED)
        choice = r.choices[0]
        assert choice.finish_reason in ("tool_calls", "length"), choice.message.content
        assert "<tool_call" not in (choice.message.content or "")
        for call in choice.message.tool_calls or []:
            spec = next(t["function"] for t in TOOLS if t["function"]["name"] == call.function.name)
            jsonschema.validate(json.loads(call.function.arguments), spec["parameters"])
        finished += choice.finish_reason == "tool_calls" and bool(choice.message.tool_calls)
    assert finished >= 1


def test_named_tool_choice_calls_that_function_once_streamed(client):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=QUESTION, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
        seed=1, stream=True, **SAMPLED))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert {d.index for d in deltas} == {0} and [d.function.name for d in deltas if d.function.name] == ["add"]
    args = json.loads("".join(d.function.arguments or "" for d in deltas))
    assert set(args) == {"a", "b"} and all(isinstance(v, int) for v in args.values())
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_false_gives_one_call(client):
    r = client.chat.completions.create(model="tiny", messages=QUESTION, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, seed=2, **SAMPLED)
    assert len(r.choices[0].message.tool_calls) == 1


def test_ollama_format_json_and_schema(server):
    c = ollama.Client(host=server.url, timeout=120)
    options = {"temperature": 1.0, "seed": 7, "num_predict": 120}
    replies = [c.chat(model="tiny", messages=QUESTION, format="json", options=options | {"seed": s, "num_predict": 200})
               for s in range(4)]  # any object: unbounded strings may be cut off by num_predict
    assert all(r.message.content.startswith("{") and r.done_reason in ("stop", "length") for r in replies)
    done = [r for r in replies if r.done_reason == "stop"]
    assert done and all(isinstance(json.loads(r.message.content), dict) for r in done)
    gen = c.generate(model="tiny", prompt="someone", format=PERSON, options=options)
    jsonschema.validate(json.loads(gen.response), PERSON)
    streamed = "".join(part.message.content for part in c.chat(model="tiny", messages=QUESTION, format=PERSON,
                                                               options=options, stream=True))
    jsonschema.validate(json.loads(streamed), PERSON)


@pytest.mark.slow
def test_smollm2_fills_a_schema_sensibly(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    r = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
        temperature=0, max_tokens=40, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    answer = json.loads(r.choices[0].message.content)
    assert answer["city"] == "Paris" and answer["country"].lower() == "france"  # SmolLM2 writes "FRANCE"


# --- the grammar module on its own ----------------------------------------------------------------------------


def test_guided_batch_equals_each_alone(tiny_llm):
    """Each sequence walks its own matcher: four guided requests batched give the tokens each gives alone."""
    guides = [tiny_llm.grammars.json(PERSON), tiny_llm.grammars.json(None), tiny_llm.grammars.tool_calls(TOOLS),
              None]
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    params = [SamplingParams(temperature=1.0, seed=i, max_tokens=120, guide=g) for i, g in enumerate(guides)]
    engine = tiny_llm.engine
    batched = engine.generate(prompts, params)
    alone = [engine.generate([p], [sp])[0].output_token_ids for p, sp in zip(prompts, params)]
    assert [s.output_token_ids for s in batched] == alone
    assert batched[0].finish_reason == "stop"
    jsonschema.validate(json.loads(tiny_llm.tokenizer.decode(alone[0])), PERSON)


def test_bad_schemas_are_one_line_errors(tiny_llm):
    for bad, words in (({"type": "nonsense"}, "nonsense"), ({"$ref": "#/defs/x"}, "/defs/x"),
                       ({"type": "string", "pattern": "(("}, "unclosed group")):
        with pytest.raises(GrammarError) as e:
            tiny_llm.grammars.json(bad)
        assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(GrammarError):
        tiny_llm.grammars.json([1, 2])
    with pytest.raises(GrammarError):
        tiny_llm.grammars.tool_calls(TOOLS, only="nope")


def test_guide_is_not_a_user_option():
    from athanor.engine.sampling_params import SamplingParamsError
    from athanor.runtime.options import params_from_options

    with pytest.raises(SamplingParamsError, match="unknown sampling option 'guide'"):
        params_from_options({}, {"guide": "x"})
    with pytest.raises(SamplingParamsError):
        SamplingParams(guide="not a grammar")


def test_tool_call_style_from_template():
    assert tool_call_style("{% for t in tools %}<tool_call>{% endfor %}") == "hermes"
    assert tool_call_style(None) == "hermes"
    assert tool_call_style('<|python_tag|>{"name": x, "parameters": y}') == "llama3"
