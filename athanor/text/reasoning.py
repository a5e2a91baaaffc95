"""Splitting a reasoning model's reply into its thinking and its answer (`<think>...</think>`, Qwen3 / DeepSeek-R1).

`ThinkSplitter` is fed the reply in pieces as they are decoded and returns, per piece, the (thinking, content)
text that is safe to send now; a tag cut across pieces ("<thi" + "nk>") is held until it is known. As vLLM's
deepseek_r1 / qwen3 reasoning parsers do: a reply that opens with `<think>` thinks until `</think>`; when the
prompt already opened the block (`started=True`: DeepSeek-R1's template ends with "<think>\\n") the reply thinks
from its first token; a reply that never opens a block is all content. A reply cut inside the block is all
thinking. Whitespace right after either tag is dropped (the template's newlines, not the model's words).
Not for deciding whether a model thinks or for the API fields (athanor/serve/reasoning.py).
"""

from __future__ import annotations

from athanor.text.stop import partial_prefix_len

START, END = "<think>", "</think>"


class ThinkSplitter:
    def __init__(self, started: bool = False, start: str = START, end: str = END) -> None:
        self.start, self.end = start, end
        self.state = "thinking" if started else "opening"  # opening -> thinking -> answer (or opening -> answer)
        self.held = ""
        self.trim = started  # drop whitespace that opens the thinking / the answer
        self.thinking = ""  # all thinking so far
        self.content = ""  # all content so far

    def feed(self, piece: str) -> tuple[str, str]:
        """(thinking, content) to send for this piece."""
        self.held += piece
        thinking, content = "", ""
        while True:
            if self.state == "opening":
                text = self.held.lstrip()
                if text.startswith(self.start):
                    self.held, self.state, self.trim = text[len(self.start):], "thinking", True
                    continue
                if not text or self.start.startswith(text):
                    break  # nothing yet, or the opening tag still arriving: wait
                self.state = "answer"
                continue
            if self.state == "thinking":
                if self.trim:
                    self.held = self.held.lstrip()
                    if not self.held:
                        break
                    self.trim = False
                cut = self.held.find(self.end)
                if cut >= 0:
                    thinking += self.held[:cut]
                    self.held, self.state, self.trim = self.held[cut + len(self.end):], "answer", True
                    continue
                keep = partial_prefix_len(self.held, (self.end,))
                thinking += self.held[:len(self.held) - keep]
                self.held = self.held[len(self.held) - keep:]
                break
            # answer
            if self.trim:
                self.held = self.held.lstrip()
                if not self.held:
                    break
                self.trim = False
            content += self.held
            self.held = ""
            break
        self.thinking += thinking
        self.content += content
        return thinking, content

    def finish(self) -> tuple[str, str]:
        """The held rest at the end of the reply: thinking when cut inside the block, else content."""
        rest, self.held = self.held, ""
        if self.state == "thinking":
            self.thinking += rest
            return rest, ""
        rest = rest.lstrip() if self.trim else rest
        self.content += rest
        return "", rest


def split_thinking(text: str, started: bool = False) -> tuple[str, str]:
    """A whole reply -> (thinking, content)."""
    s = ThinkSplitter(started)
    s.feed(text)
    s.finish()
    return s.thinking, s.content
