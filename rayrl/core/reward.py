"""`rayrl.core.reward`: the reward classes (defined in `rayrl.rewards`)."""

from rayrl.rewards import (  # noqa: F401
    CompositeReward,
    ConcisenessReward,
    CorrectnessReward,
    EngagementReward,
    FormatReward,
    HelpfulnessReward,
    RewardFunction,
    RewardResult,
    RewardType,
    SafetyReward,
    reward_function,
)
