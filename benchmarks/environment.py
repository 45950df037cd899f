"""Whether a change to the files that build the environment can have changed a result.

Every result depends on the environment the benchmarks ran in: which packages, at which
versions. ``make`` builds it from two files:

* ``constraints.txt`` pins versions (the tested torch). A result depends on its pins,
  not on its comments or the order of its lines.
* ``pyproject.toml`` says what is installed. A result depends on the Python version it
  requires, on its build system and on the *set* of requirements of the core and of the
  extras the base environment installs, whichever group each sits in: moving
  ``matplotlib`` from the core into ``torchgrow[report]`` installs the same packages,
  and so does a change to the description, the entry points or the lint settings.

The extras in :data:`OVER_FROZEN_BASE` (the test-only integrations and the
documentation tools) are installed after the base, with every package of the base
pinned to the version it has (``pip freeze``; the Makefile's second step): they can add
packages but never change one the benchmarks use, so their requirements are not part of
what a result depends on. A test checks that the Makefile installs them that way.
"""

from __future__ import annotations

import tomllib

__all__ = ["OVER_FROZEN_BASE", "environment_reason"]

OVER_FROZEN_BASE = ("lightning", "hf", "docs")


def _pins(text: str) -> frozenset[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(line.replace(" ", "") for line in lines if line)


def _installed(text: str) -> tuple[object, ...]:
    """What of a ``pyproject.toml`` decides which packages the base environment holds."""
    doc = tomllib.loads(text)
    project = doc.get("project", {})
    groups = project.get("optional-dependencies", {})
    requirements = set(project.get("dependencies", []))
    for name, reqs in groups.items():
        if name not in OVER_FROZEN_BASE:
            requirements.update(reqs)
    return (
        doc.get("build-system"),
        project.get("requires-python"),
        sorted(r.replace(" ", "") for r in requirements),
    )


def environment_reason(path: str, old: str, new: str) -> str | None:
    """Why a change of ``path`` (``pyproject.toml`` or ``constraints.txt``) from ``old`` to
    ``new`` can change a result, or ``None`` if the base environment is the same.

    Parameters
    ----------
    path : str
        The file's path in the repository.
    old, new : str
        Its text when the result was made, and now.

    Returns
    -------
    str or None
        The reason, or ``None`` when the change cannot move a result.
    """
    if path == "constraints.txt":
        return None if _pins(old) == _pins(new) else "pins changed"
    if path == "pyproject.toml":
        try:
            same = _installed(old) == _installed(new)
        except tomllib.TOMLDecodeError:
            return "changed"
        return None if same else "installed requirements changed"
    return "changed"
