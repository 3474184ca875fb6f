"""Fabric 1's task arguments, `fab image.bake:role=app` and `fab release.rollback:app-12`.

The users type the old form; Fabric 3 does not know it. `translate` rewrites
such words into the modern form before Invoke parses them, for every task alike:

    image.bake:role=app          ->  image.bake --role=app
    image.bake:app,force=yes     ->  image.bake app --force
    release.rollback:app-12      ->  release.rollback app-12

A positional value goes to the task's positional parameters; `key=value`
becomes a flag, and for a boolean flag a true value (yes/true/1/on) sets it and
a false one leaves it out. Commas inside a value are written `\\,` as in Fabric 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from workbench.core.errors import ConfigError

_TRUE = {"yes", "true", "1", "on", "y"}
_FALSE = {"no", "false", "0", "off", "n", ""}

# (task name) -> (positional names, boolean flag names, all flag names), or None if unknown.
TaskLookup = Callable[[str], "tuple[list[str], set[str], set[str]] | None"]


def split_args(text: str) -> list[str]:
    """Split `a,b\\,c,d=e` on unescaped commas: ['a', 'b,c', 'd=e']."""
    parts = re.split(r"(?<!\\),", text)
    return [p.replace("\\,", ",") for p in parts]


def translate(argv: list[str], lookup: TaskLookup) -> list[str]:
    out: list[str] = []
    for word in argv:
        if word.startswith("-") or ":" not in word:
            out.append(word)
            continue
        task, _, rest = word.partition(":")
        shape = lookup(task)
        if shape is None:
            # Not a task: leave it alone (a value such as an image `app:7`).
            out.append(word)
            continue
        positional, booleans, flags = shape
        out.append(task)
        given_positional = 0
        for part in split_args(rest) if rest else []:
            key, eq, value = part.partition("=")
            if not eq:
                if given_positional >= len(positional):
                    raise ConfigError(
                        f"{word!r}: {task} takes {len(positional)} positional argument(s) "
                        f"({', '.join(positional) or 'none'}); give the others as key=value"
                    )
                out.append(part)
                given_positional += 1
                continue
            flag = key.strip().replace("_", "-")
            if flag not in flags:
                raise ConfigError(
                    f"{word!r}: {task} has no argument {key!r} (it takes: {', '.join(sorted(flags)) or 'none'})"
                )
            if flag in booleans:
                lowered = value.strip().lower()
                if lowered in _TRUE:
                    out.append(f"--{flag}")
                elif lowered not in _FALSE:
                    raise ConfigError(f"{word!r}: {key} is a yes/no flag, not {value!r}")
                continue
            out.append(f"--{flag}={value}")
    return out
