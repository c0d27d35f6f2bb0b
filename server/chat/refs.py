"""Local ``$ref``s of a JSON schema that is placed inside a bigger one.

A reference such as ``#/$defs/Item`` (what pydantic writes), ``#/definitions/Item``, a ref into
nested ``$defs`` or ``#`` itself (a recursive model) points from the root of the document it is
in. The pre-v11 forced-call constraint puts each tool's parameter schema inside the schema of
the whole call array, so those references must be prefixed with the pointer of the place the
tool schema now occupies. Each tool keeps its own ``$defs`` where they are: two tools with an
``Item`` each never collide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Keywords whose values are data, not schemas: a {"$ref": …} inside them is left alone.
DATA = frozenset({"const", "enum", "default", "examples"})
# Keywords whose values map names (properties, definitions) to schemas: the names are data.
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                         "dependentSchemas"})


def pointer(*tokens: str | int) -> str:
    """A JSON pointer fragment (``#/a/b``) from unescaped tokens."""
    return "#" + "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


def rebuild(schema: Any, visit: Callable[[dict[str, Any], str | None], dict[str, Any]]) -> Any:
    """A copy of ``schema`` with ``visit(copy, keyword)`` applied to every schema object in it,
    innermost first; ``keyword`` is the one it sits under (``"allOf"``, ``"items"``, a map's
    keyword…; None at the root). Data keywords are copied as they are, and map keys (property
    and definition names) are names, never keywords."""
    def walk(node: Any, keyword: str | None) -> Any:
        if isinstance(node, list):
            return [walk(item, keyword) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in DATA:
                out[key] = value
            elif key in SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: walk(sub, key) for name, sub in value.items()}
            else:
                out[key] = walk(value, key)
        return visit(out, keyword)

    return walk(schema, None)


def relocate(schema: Any, at: str) -> Any:
    """``schema`` with every local ``$ref`` rewritten for its new place ``at`` (``#/…``)."""
    if at in ("", "#"):
        return schema
    base = at.rstrip("/")

    def moved(node: dict[str, Any], keyword: str | None) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
            node["$ref"] = base + ref[1:]
        return node

    return rebuild(schema, moved)
