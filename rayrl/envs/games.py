"""Small text games written against gymnasium's API, with no rayrl imports.

They are what `rayrl.envs.gym_adapter` is for: third-party environments that speak
`reset(seed=None, options=None) -> (obs, info)` and
`step(action) -> (obs, reward, terminated, truncated, info)`. `jobs/gym_guess_number.yaml`
trains on `GuessNumberGame` through the adapter; nothing here knows about rayrl.
"""

from __future__ import annotations

import random
import re

_INTEGER = re.compile(r"-?\d+")


class GuessNumberGame:
    """Guess a hidden integer in `low..high` within `max_guesses`; hints say higher or lower.

    The guess is the first integer in the reply; a reply with none uses up a guess.
    Reward: 1.0 on the guess that hits, else 0.0. `options={"target": n}` fixes the
    hidden number (tests); otherwise it comes from `seed`.
    """

    def __init__(self, low: int = 1, high: int = 10, max_guesses: int = 3):
        if low >= high or max_guesses < 1:
            raise ValueError(f"need low < high and max_guesses >= 1, got {low}, {high}, {max_guesses}")
        self.low, self.high, self.max_guesses = low, high, max_guesses
        self.target = low
        self.guesses = 0

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        target = (options or {}).get("target")
        self.target = int(target) if target is not None else random.Random(seed).randint(self.low, self.high)
        self.guesses = 0
        return (
            f"I picked a whole number from {self.low} to {self.high}. You have {self.max_guesses} "
            "guesses. Reply with just your guess.",
            {},
        )

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        self.guesses += 1
        found = _INTEGER.search(action[:200])
        guess = int(found.group(0)) if found else None
        won = guess == self.target
        if won:
            hint = "Right!"
        elif guess is None:
            hint = "I see no number in that. Reply with just your guess."
        else:
            hint = f"No, my number is {'higher' if guess < self.target else 'lower'} than {guess}."
        truncated = not won and self.guesses >= self.max_guesses
        return hint, 1.0 if won else 0.0, won, truncated, {"guess": guess, "won": won}
