"""Terminal chat for `athanor run`: one-shot answers, the interactive loop and Ollama-style --verbose stats.

Not for argument parsing (cli.py) or generation itself (runtime/): this only prints what a model handle's `stream` yields.
"""

from __future__ import annotations

import sys

HELP = """Available commands:
  /set parameter NAME VALUE   set a sampling option for this session (e.g. /set parameter temperature 0)
  /show                       show the model's info and the session's parameters
  /clear                      forget the conversation so far
  /bye                        exit
  /?                          this help
Use \"\"\" to begin and end a multi-line message."""


def read_piped_prompt() -> str:
    """Text piped on stdin (`echo hi | athanor run smollm2`), or '' for a terminal."""
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    data = sys.stdin.read()
    return ("\n" + data) if data.strip() else ""


def stream_answer(llm, prompt_ids: list[int], options: dict, verbose: bool, span=None):
    """Print tokens as they come; returns the Completion. `span`: an llm span told the first token."""
    completion = None
    for delta in llm.stream(prompt_ids, options):
        if span is not None:
            span.first_token()
        if delta.text:
            sys.stdout.write(delta.text)
            sys.stdout.flush()
        completion = delta.completion or completion
    sys.stdout.write("\n")
    if verbose:
        sys.stderr.write(format_stats(llm.load_seconds, completion) + "\n")
    return completion


def one_shot(llm, text: str, verbose: bool, model: str = "") -> None:
    """One answer, recorded as an `llm` span when tracing is on (llm/traced.py; the CLI turns tracing on)."""
    from athanor.llm.base import ChatResponse, Usage
    from athanor.llm.traced import close_llm_span, open_llm_span

    messages = [{"role": "user", "content": text.strip()}]
    span = open_llm_span(model, "athanor", messages, dict(getattr(llm, "defaults", {}) or {}))
    try:
        c = stream_answer(llm, llm.chat_prompt(messages), {}, verbose, span)
    except BaseException as e:
        span.fail(e)
        span.end()
        raise
    close_llm_span(span, ChatResponse(c.text, [], c.finish_reason or "stop", Usage(c.num_prompt_tokens, len(c.token_ids))))


def format_stats(load_seconds: float, c) -> str:
    """Ollama's --verbose block: durations, counts and rates."""
    def rate(n, s):
        return f"{n / s:.2f} tokens/s" if s > 0 else "-"

    n_eval = max(len(c.token_ids) - 1, 0)  # the first token belongs to the prompt eval (as TTFT)
    rows = [
        ("total duration", _dur(load_seconds + c.prompt_seconds + c.decode_seconds)),
        ("load duration", _dur(load_seconds)),
        ("prompt eval count", f"{c.num_prompt_tokens} token(s)" + (f" ({c.num_cached_tokens} cached)" if c.num_cached_tokens else "")),
        ("prompt eval duration", _dur(c.prompt_seconds)),
        ("prompt eval rate", rate(c.num_prompt_tokens - c.num_cached_tokens, c.prompt_seconds)),
        ("eval count", f"{len(c.token_ids)} token(s)"),
        ("eval duration", _dur(c.decode_seconds)),
        ("eval rate", rate(n_eval, c.decode_seconds)),
    ]
    return "\n".join(f"{k + ':':<22}{v}" for k, v in rows)


def _dur(s: float) -> str:
    return f"{s * 1000:.1f}ms" if s < 1 else f"{s:.3f}s"


def interactive(llm, verbose: bool) -> None:
    history: list[dict] = []
    options: dict = {}
    print(f"{llm.name}: type a message, /? for help, /bye to exit.", file=sys.stderr)
    while True:
        text = _read_message()
        if text is None or text.strip() == "/bye":
            return
        if text.strip().startswith("/"):
            _command(text.strip(), llm, history, options)
            continue
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        try:
            c = stream_answer(llm, llm.chat_prompt(history), options, verbose)
        except KeyboardInterrupt:
            print("\n(interrupted)", file=sys.stderr)
            history.pop()
            continue
        history.append({"role": "assistant", "content": c.text})


def _read_message() -> str | None:
    try:
        line = input(">>> ")
    except EOFError:
        return None
    except KeyboardInterrupt:
        print()
        return ""
    if not line.startswith('"""'):
        return line
    lines = [line[3:]]
    while not lines[-1].endswith('"""'):
        try:
            lines.append(input("... "))
        except EOFError:
            break
    return "\n".join(lines).removesuffix('"""')


def _command(cmd: str, llm, history: list, options: dict) -> None:
    from athanor.errors import AthanorError

    parts = cmd.split(maxsplit=3)
    if parts[0] == "/clear":
        history.clear()
        print("Cleared session context.")
    elif parts[0] == "/show":
        print(f"model: {llm.name}  ({llm.info.get('arch')}, {llm.info.get('quantization')})")
        print(f"context: {llm.engine.max_model_len} tokens; options: {llm.defaults | options}")
    elif parts[:2] == ["/set", "parameter"] and len(parts) == 4:
        try:
            llm.sampling_params(options | {parts[2]: _value(parts[3])})  # validate before keeping it
            options[parts[2]] = _value(parts[3])
            print(f"Set parameter '{parts[2]}' to '{parts[3]}'")
        except (AthanorError, ValueError) as e:
            print(f"error: {e}")
    elif parts[0] in ("/?", "/help"):
        print(HELP)
    else:
        print(f"Unknown command {parts[0]!r}. Type /? for help.")


def _value(text: str):
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
