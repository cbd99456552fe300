"""Validation of `environment.params` shared by the built-in environments.

Each environment declares its settings as a pydantic model; this turns pydantic's
errors into one ConfigError whose message names every bad key as
`environment.params.<key>`, the way a user would write it in a config file.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from rayrl.config import ConfigError

T = TypeVar("T")


def validate_params(model: type[T], params: Any, where: str = "environment.params") -> T:
    """`params` validated as `model`.

    Args:
        model: the environment's params model (or any type pydantic validates,
            such as `list[Scenario]`).
        params: the raw value (usually the `config.params` mapping).
        where: prefix of the key names in the error message.

    Raises:
        ConfigError: naming each bad key as `<where>.<key>`.
    """
    try:
        return TypeAdapter(model).validate_python(params)
    except ValidationError as err:
        bad = "; ".join(f"{'.'.join([where, *map(str, e['loc'])])}: {e['msg']}" for e in err.errors())
        raise ConfigError(bad) from None
