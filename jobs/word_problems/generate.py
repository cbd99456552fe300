"""Generate the word-problem set of `jobs/word_problems.yaml`: short text problems that take
two or three arithmetic steps, with integer answers.

    .venv/bin/python jobs/word_problems/generate.py            # writes train.jsonl, test.jsonl

Each row: `question`, `answer` (an integer, as text), `steps` (arithmetic operations the
answer takes), `template` (which of the templates below). Train and test rows come from
the same templates with different numbers and names; no question is in both files. The
output is deterministic for a given `--seed`.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

NAMES = ["Tom", "Sara", "Ali", "Mia", "Ben", "Lena", "Omar", "Nina", "Raj", "Zoe", "Ivan", "Emma"]
THINGS = ["apples", "marbles", "stickers", "pencils", "cards", "shells", "coins", "stamps"]

# A template draws its numbers and returns (question, answer, steps), or None to redraw.
Template = Callable[[random.Random], "tuple[str, int, int] | None"]


def buy_and_give(r: random.Random):
    name, thing = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(3, 30), r.randint(2, 20)
    c = r.randint(1, a + b - 1)
    return (
        f"{name} has {a} {thing}, gets {b} more, then gives away {c}. How many {thing} does {name} have now?",
        a + b - c,
        2,
    )


def boxes_minus(r: random.Random):
    name, thing = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, 12), r.randint(2, 9)
    c = r.randint(1, a * b - 1)
    return (
        f"A box holds {a} {thing}. {name} buys {b} boxes and then loses {c} {thing}. "
        f"How many {thing} does {name} have left?",
        a * b - c,
        2,
    )


def pages(r: random.Random):
    name = r.choice(NAMES)
    a, b, c = r.randint(2, 15), r.randint(2, 7), r.randint(1, 20)
    return (
        f"{name} reads {a} pages a day for {b} days, then {c} more pages. How many pages did {name} read in all?",
        a * b + c,
        2,
    )


def share_then_eat(r: random.Random):
    b, k = r.randint(2, 6), r.randint(3, 12)
    c = r.randint(1, k - 1)
    food = r.choice(["cookies", "grapes", "candies", "nuts", "crackers"])
    return (
        f"{b * k} {food} are shared equally among {b} children. Each child then eats {c} of them. "
        f"How many {food} does each child have left?",
        k - c,
        2,
    )


def change(r: random.Random):
    name = r.choice(NAMES)
    a, b = r.randint(2, 9), r.randint(2, 6)
    bill = next(x for x in (10, 20, 50, 100) if x > a * b)
    return (
        f"Pens cost {a} dollars each. {name} buys {b} pens and pays with a {bill}-dollar bill. How much change does {name} get?",
        bill - a * b,
        2,
    )


def pool_and_split(r: random.Random):
    name, thing = r.choice(NAMES), r.choice(THINGS)
    c, k = r.randint(2, 6), r.randint(2, 10)
    total = c * k
    a = r.randint(1, total - 1)
    return (
        f"{name} had {a} {thing} and got {total - a} more, then put them equally into {c} bags. "
        f"How many {thing} are in each bag?",
        k,
        2,
    )


def legs(r: random.Random):
    a, b = r.randint(2, 15), r.randint(2, 15)
    four, two = r.choice([("cows", "chickens"), ("dogs", "ducks"), ("goats", "geese"), ("pigs", "hens")])
    return (
        f"A farm has {a} {four} and {b} {two}. How many legs do the animals have in total?",
        4 * a + 2 * b,
        3,
    )


def trip(r: random.Random):
    a, b, c = r.randint(10, 60), r.randint(2, 4), r.randint(5, 40)
    return (
        f"A bus drives {a} km each hour for {b} hours, then {c} km more. How many km does it drive?",
        a * b + c,
        2,
    )


def two_friends(r: random.Random):
    n1, n2 = r.sample(NAMES, 2)
    thing = r.choice(THINGS)
    a, d, c = r.randint(5, 25), r.randint(2, 10), r.randint(1, 5)
    return (
        f"{n1} has {a} {thing}. {n2} has {d} more than {n1}. Together they give away {c}. "
        f"How many {thing} do they have left together?",
        a + a + d - c,
        3,
    )


def rows_plus(r: random.Random):
    a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(1, 9)
    return (
        f"A garden has {a} rows of {b} plants, and {c} plants are added. How many plants are there now?",
        a * b + c,
        2,
    )


TEMPLATES: dict[str, Template] = {
    f.__name__: f
    for f in (
        buy_and_give,
        boxes_minus,
        pages,
        share_then_eat,
        change,
        pool_and_split,
        legs,
        trip,
        two_friends,
        rows_plus,
    )
}


def rows(n: int, rng: random.Random, taken: set[str]) -> list[dict]:
    out: list[dict] = []
    names = sorted(TEMPLATES)
    misses = 0
    while len(out) < n:
        name = names[len(out) % len(names)]  # every template equally often
        drawn = TEMPLATES[name](rng)
        if drawn is None or drawn[0] in taken:
            misses += 1
            if misses > 100 * n:
                raise SystemExit(f"template {name} has run out of new questions; ask for fewer rows")
            continue
        question, answer, steps = drawn
        taken.add(question)
        out.append({"question": question, "answer": str(answer), "steps": steps, "template": name})
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent))
    args = parser.parse_args()
    rng, taken = random.Random(args.seed), set()
    test = rows(args.test, rng, taken)  # test first: its questions are then never drawn for train
    train = rows(args.train, rng, taken)
    out = Path(args.out)
    for name, data in (("train", train), ("test", test)):
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in data))
        print(f"{path}: {len(data)} rows")


if __name__ == "__main__":
    main()
