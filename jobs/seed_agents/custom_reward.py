# Rewards written against conversation turns: a RewardFunction subclass and a decorated
# per-turn (IMMEDIATE) function, as the agent API shows them, scored on a conversation
# and then used to train. Changes from the user's original: the import path (rayrl).
#   .venv/bin/python jobs/seed_agents/custom_reward.py
import asyncio
import os

from rayrl.core.agent import AgentConfig, MultiTurnAgent
from rayrl.core.environment import ConversationEnvironment
from rayrl.core.reward import RewardFunction, RewardResult, RewardType, reward_function
from rayrl.training.train import train

MODEL = os.environ.get("RAYRL_EXAMPLE_MODEL", "SmolLM2-135M-Instruct")


class CustomReward(RewardFunction):
    async def compute_reward(self, turns, context=None):
        assistant_turns = [t for t in turns if t.role == "assistant"]

        # Custom scoring logic
        total_score = 0.0
        breakdown = {}

        for i, turn in enumerate(assistant_turns):
            score = self.evaluate_turn(turn.content)
            total_score += score
            breakdown[f"turn_{i}"] = score

        avg_score = total_score / max(1, len(assistant_turns))

        return RewardResult(
            score=avg_score,
            breakdown=breakdown,
            metadata={"num_turns": len(assistant_turns)}
        )

    def evaluate_turn(self, content):
        # Custom evaluation logic
        return len(content) / 100.0  # Simple example


@reward_function(weight=0.5, reward_type=RewardType.IMMEDIATE)
async def creativity_reward(turns, context=None):
    """Reward creative responses"""
    creative_words = ["creative", "innovative", "unique", "original"]

    assistant_content = " ".join(
        turn.content for turn in turns if turn.role == "assistant"
    ).lower()

    creativity_score = sum(
        0.1 for word in creative_words if word in assistant_content
    )

    return min(creativity_score, 1.0)


async def main():
    env = ConversationEnvironment(
        scenarios=[{"id": "ideas", "user_responses": ["Give me an idea for a party.", "Another one?"]}],
        max_turns=2,
    )
    agent = MultiTurnAgent(AgentConfig(model_name=MODEL, max_new_tokens=64))
    episodes = int(os.environ.get("RAYRL_EXAMPLE_EPISODES", "16"))
    await train(agent, env, num_episodes=episodes, reward_fn=CustomReward())
    await train(agent, env, num_episodes=episodes, reward_fn=creativity_reward)
    return agent


if __name__ == "__main__":
    asyncio.run(main())
