"""The lower-case words of the tokens the stages read, looked up once per doc."""

from __future__ import annotations

from bisect import bisect_left

SIDE_WORDS = {"left": "left", "right": "right", "bilateral": "both", "both": "both", "bilaterally": "both"}


class Words:
    """Lower-case token texts of a doc (one lookup per token of its LOWER column), sliced by token offsets."""

    __slots__ = ("words", "_sides")

    def __init__(self, strings, hashes: list[int]):
        self.words = [strings[h] for h in hashes]
        self._sides: tuple[list[int], list[str]] | None = None  # the doc's side words: positions, sides

    def __getitem__(self, window: slice) -> list[str]:
        return self.words[window]

    def sides(self, start: int, end: int) -> set[str]:
        """Sides ("left", "right", "both") named by side words among tokens start..end."""
        if self._sides is None:  # found once per doc, then bisected per question
            at = [i for i, w in enumerate(self.words) if w in SIDE_WORDS]
            self._sides = (at, [SIDE_WORDS[self.words[i]] for i in at])
        at, named = self._sides
        lo = bisect_left(at, start)
        return set(named[lo : bisect_left(at, end, lo)])
