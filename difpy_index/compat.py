"""difPy 4.x drop-in: ``import difpy_index as difPy`` then ``difPy.build`` / ``difPy.search``.

Backed by the default catalog (or ``catalog=``), so a second ``build`` decodes nothing.
"""

from __future__ import annotations

from typing import Any


def build(*directory: Any, **kwargs: Any) -> Any:
    from ._difpy import Build

    return Build(*directory, **kwargs)


def search(difpy_obj: Any, **kwargs: Any) -> Any:
    from ._difpy import Search

    return Search(difpy_obj, **kwargs)
