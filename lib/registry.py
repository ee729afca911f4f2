"""Named factories, in the manner of timm's ``create_model``.

Backends register themselves under a name; ``create(name, **kw)`` drops options left unset
(``None``) so each factory keeps its own defaults, and an unknown name fails with the list
of valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """A mapping from names to factories of one kind of component."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} backend {name!r} is registered twice")
            self._factories[name] = fn
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, **kwargs: Any) -> Any:
        if name not in self._factories:
            raise KeyError(
                f"unknown {self.kind} backend {name!r}; valid names: {', '.join(self.names())}"
            )
        return self._factories[name](**{k: v for k, v in kwargs.items() if v is not None})
