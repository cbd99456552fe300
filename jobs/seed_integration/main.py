# The integration example (environment, tools, inference, training), run as a job.
# Changes from the user's original: the import path (rayrl), the model (the offline
# default, SmolLM2-135M-Instruct), and `tool_manager=tool_manager` given to the trainer,
# so that training episodes run through the tools (5 turns, replies parsed as JSON calls).
#   .venv/bin/python jobs/seed_integration/main.py
import logging

from game_env import TextAdventureEnvironment
from game_tools import AttackTool, HealTool, LevelUpTool, TakeTool

from rayrl import (
    ConfigStore,
    JSONActionParser,
    MultiTurnInferenceEngine,
    MultiTurnManager,
    RayPPOTrainer,
    ToolRegistry,
    create_inference_engine,
)

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger(__name__)


def main():
    # Configuration
    config = ConfigStore()
    config.model.model_name = "SmolLM2-135M-Instruct"
    config.inference.backend = "vllm"
    config.inference.max_tokens = 128
    config.training.learning_rate = 1e-5
    config.training.num_epochs = 5
    config.training.batch_size = 4
    config.checkpoint.save_interval = 2

    logger.info("Configuration initialized")

    # Initialize environment
    env = TextAdventureEnvironment(config.environment)
    logger.info("Environment initialized")

    # Initialize tools
    registry = ToolRegistry()
    registry.register(AttackTool(env))
    registry.register(TakeTool(env))
    registry.register(HealTool(env))
    registry.register(LevelUpTool(env))
    logger.info(f"Tools registered: {[t.definition.name for t in registry.list_definitions()]}")

    # Initialize multi-turn with tools
    parser = JSONActionParser(registry)
    tool_manager = MultiTurnManager(
        tool_registry=registry,
        action_parser=parser,
        environment=env,
        max_turns=5,
    )

    inference = create_inference_engine(
        model_path=config.model.model_name,
        backend=config.inference.backend,
    )

    multi_turn = MultiTurnInferenceEngine(
        engine=inference,
        max_turns=5,
        tool_manager=tool_manager,
        enable_tools=True,
    )
    logger.info("Multi-turn inference initialized")

    # Test one episode with tools
    logger.info("Running test episode with tools...")
    test_summary = multi_turn.run_episode(
        environment=env,
        initial_prompt=env.get_prompt_prefix(),
        max_tokens=128,
    )

    logger.info(f"Test episode: {test_summary['num_turns']} turns, "
                f"{test_summary['total_reward']} reward, "
                f"{test_summary['tools']['successful_tool_calls']} successful tool calls")

    # Reward function for RL
    def compute_episode_reward(episode_summary):
        """Compute RL reward from episode."""
        reward = episode_summary['total_reward']

        # Bonus for using tools effectively
        tools_bonus = episode_summary['tools']['successful_tool_calls'] * 2

        return reward + tools_bonus

    # Initialize trainer
    trainer = RayPPOTrainer(
        config=config,
        environment=env,
        reward_fn=compute_episode_reward,
        tool_manager=tool_manager,
    )
    logger.info("Trainer initialized")

    # Training loop
    logger.info("Starting training...")
    try:
        trainer.fit(num_epochs=config.training.num_epochs)
        logger.info("Training completed successfully!")
    except KeyboardInterrupt:
        logger.info("Training interrupted")
    finally:
        trainer.cleanup()
        inference.shutdown()

    for metric_dict in trainer.metrics_history:
        epoch = metric_dict['epoch']
        loss = metric_dict['total_loss']
        print(f"Epoch {epoch}: loss={loss:.4f}")


if __name__ == "__main__":
    main()
