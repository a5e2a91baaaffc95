"""Stop strings: cut a text stream at the first stop string, even when it arrives split across deltas.

For: the one implementation every text path uses (the runtime's TextStream for engine requests, serve/'s tool-call
hold-back via `partial_prefix_len`). Not for stop token ids (the engine stops on those: SamplingParams).
"""

from __future__ import annotations

from collections.abc import Sequence


def partial_prefix_len(text: str, patterns: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of one of `patterns` (text to hold back)."""
    best = 0
    for pattern in patterns:
        for n in range(min(len(pattern) - 1, len(text)), best, -1):
            if text.endswith(pattern[:n]):
                best = n
                break
    return best


class StopMatcher:
    """Cuts a text stream at the first occurrence of any stop string, even when it arrives split across deltas.

    Text that could still turn out to be the start of a stop string is held back until the next delta decides.
    Empty stop strings are ignored (they would match before any text).
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = [s for s in stop if s]
        self.pending = ""  # held-back text that may be the start of a stop string
        self.stopped = False

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit now, whether a stop string was reached)."""
        if self.stopped:
            return "", True
        buf = self.pending + delta
        hits = [i for i in (buf.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped, self.pending = True, ""
            return buf[:min(hits)], True
        keep = self._partial_match_len(buf)
        self.pending = buf[len(buf) - keep:]
        return buf[:len(buf) - keep], False

    def _partial_match_len(self, buf: str) -> int:
        return partial_prefix_len(buf, self.stop)

    def flush(self) -> str:
        """End of sequence without a stop: the held-back tail is ordinary text after all."""
        tail, self.pending = self.pending, ""
        return tail
