"""Tool use for agents: tool definitions, a registry that runs tools safely, and
parsers that turn a model's text into a validated tool call.

Nothing here imports torch, Ray, vLLM or transformers: tool definitions and
parsers are exercised in unit tests and inside any actor without loading a model.
"""
