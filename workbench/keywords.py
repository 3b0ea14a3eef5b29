"""Earlier keyword names of public functions, still accepted (one vocabulary, no breakage).

>>> @renamed(mv="version")
... def report(project, version=None): ...
>>> report(p, mv="v2")          # the same call as report(p, version="v2")
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def renamed(**earlier: str) -> Callable[[F], F]:
    """Accept each keyword ``old=`` as the parameter ``earlier[old]`` (the signature shown
    by ``help`` and ``inspect`` is the new one); passing both names raises ``TypeError``."""
    def decorate(function: F) -> F:
        @functools.wraps(function)
        def accepting(*args: Any, **kwargs: Any) -> Any:
            for old, new in earlier.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{function.__qualname__}: pass {new}= only "
                                        f"({old}= is its earlier name)")
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)
        accepting.__renamed__ = dict(earlier)  # type: ignore[attr-defined]
        return accepting  # type: ignore[return-value]
    return decorate
