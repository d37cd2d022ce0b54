"""The offline text-classification default: SYNTHETIC reviews generated in code, with negation and `but` clauses,
so that text models train (and tests run) without downloading anything."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from dlkit.data.tables import Chunk, chunks_of
from dlkit.data.text import ENCODE_ROWS, Source, TextClassificationDataModule

SUBJECTS = ["the movie", "the film", "the plot", "the acting", "the music", "the story", "the ending", "the cast",
            "the script", "the director", "the camera work", "the dialogue"]
POSITIVE = ["good", "great", "wonderful", "excellent", "brilliant", "moving", "superb", "delightful", "fun"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "dull", "weak", "poor", "clumsy", "tedious"]
VERBS = ["was", "is", "seemed", "felt"]
INTENSIFIERS = ["", "", "very", "really", "truly", "quite"]


def synthetic_review(rng: random.Random) -> tuple[str, str]:
    """A made-up review and its label: a clause is positive unless its adjective or a `not` makes it negative,
    and after `but` the second clause decides. Bag-of-words cannot solve it: order and scope matter."""

    def clause() -> tuple[str, bool]:
        positive = rng.random() < 0.5
        negated = rng.random() < 0.5
        words = [rng.choice(SUBJECTS), rng.choice(VERBS), "not" if negated else "", rng.choice(INTENSIFIERS),
                 rng.choice(POSITIVE if positive else NEGATIVE)]
        return " ".join(w for w in words if w), positive != negated

    first, sentiment = clause()
    if rng.random() < 0.5:
        second, sentiment = clause()
        first = f"{first} but {second}"
    return first, "positive" if sentiment else "negative"


class SyntheticSentimentDataModule(TextClassificationDataModule):
    """SYNTHETIC reviews generated in code (negation and `but` clauses), so text models train offline."""

    def __init__(self, num_examples: int = 6000, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_examples, self.seed = num_examples, seed

    def reviews(self) -> Iterator[tuple[str, str]]:
        """The same reviews every time (each pass over the data starts the generator anew)."""
        rng = random.Random(self.seed)
        for _ in range(self.num_examples):
            yield synthetic_review(rng)

    def sources(self) -> dict[str, Source]:
        def rows() -> Iterator[Chunk]:
            return chunks_of(self.reviews(), ("text", "label"), ENCODE_ROWS)

        return {"train": rows}

    def source_id(self) -> Any:
        return ["synthetic_sentiment", self.num_examples, self.seed]
