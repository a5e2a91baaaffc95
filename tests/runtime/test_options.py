"""API option names -> SamplingParams: model defaults then the request, Ollama and OpenAI spellings, one-line errors."""

from __future__ import annotations

import pytest

from athanor.runtime.options import params_from_options, valid_option_names


def test_from_options_merges_defaults_then_request_with_ollama_names():
    defaults = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "num_predict": 128, "repeat_penalty": 1.1}
    request = {"temperature": 0.2, "repeat_penalty": 1.3, "repeat_last_n": 64, "stop": ["</s>"], "seed": 3}
    p = params_from_options(defaults, request)
    assert (p.temperature, p.top_p, p.top_k, p.max_tokens) == (0.2, 0.9, 40, 128)
    assert (p.repetition_penalty, p.repeat_last_n, p.stop, p.seed) == (1.3, 64, ["</s>"], 3)
    assert params_from_options({"num_predict": 128}, {"num_predict": -1}).max_tokens is None  # infinite
    assert params_from_options({"num_predict": 128}, {"max_tokens": 5}).max_tokens == 5
    assert params_from_options({"temperature": 0.3}, {"temperature": None}).temperature == 0.3  # null
    assert params_from_options({}, {"max_completion_tokens": 9, "top_k": -1}).max_tokens == 9


def test_from_options_rejects_unknown_and_bad_options():
    with pytest.raises(ValueError) as err:
        params_from_options({}, {"temprature": 0.5})
    message = str(err.value)
    assert "'temprature'" in message and "temperature" in message and "num_predict" in message and "\n" not in message
    assert set(valid_option_names()) >= {"max_tokens", "num_predict", "repeat_penalty", "repeat_last_n", "stop"}
    with pytest.raises(ValueError, match="given twice"):
        params_from_options({}, {"num_predict": 5, "max_tokens": 6})
    with pytest.raises(ValueError, match="^top_p must be"):
        params_from_options({"top_p": 2.0}, {})
