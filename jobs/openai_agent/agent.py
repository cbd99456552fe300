"""An agent written against the OpenAI client only: it knows nothing of rayrl.

rayrl calls `run(client, task)` once per episode during training, with an
`openai.AsyncOpenAI` client whose base URL is the run's endpoint in front of the
policy being trained. The agent asks a sum, tells the model when it is wrong, and
returns its own reward: 1 for a right first answer, 0.5 for a right second one.
"""

import re

FEEDBACK = "Your answer is wrong. Try again: give just the number."


def last_integer(text):
    found = re.findall(r"-?\d+", text.replace(",", ""))
    return int(found[-1]) if found else None


async def run(client, task) -> float:
    answer = task["a"] + task["b"]
    messages = [
        {"role": "system", "content": "Solve the arithmetic problem."},
        {"role": "user", "content": f"What is {task['a']} + {task['b']}?"},
    ]
    for turn in range(2):
        response = await client.chat.completions.create(model="policy", messages=messages, max_tokens=32)
        text = response.choices[0].message.content or ""
        if last_integer(text) == answer:
            return 0.5**turn
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": FEEDBACK}]
    return 0.0
