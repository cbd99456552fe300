"""Import paths of the agent API as users know them from other agent frameworks
(`rayrl.core.agent`, `rayrl.core.environment`, `rayrl.core.reward`, `rayrl.core.trainer`); each module
re-exports the rayrl classes and adds nothing of its own."""
