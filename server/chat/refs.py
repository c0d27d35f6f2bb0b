"""Local ``$ref``s of a JSON schema that is placed inside a bigger one.

A reference such as ``#/$defs/Item`` (what pydantic writes), ``#/definitions/Item``, a ref into
nested ``$defs`` or ``#`` itself (a recursive model) points from the root of the document it is
in. The pre-v11 forced-call constraint puts each tool's parameter schema inside the schema of
the whole call array, so those references must be prefixed with the pointer of the place the
tool schema now occupies. Each tool keeps its own ``$defs`` where they are: two tools with an
``Item`` each never collide.
"""

from __future__ import annotations

from typing import Any

# Keywords whose values are data, not schemas: a {"$ref": …} inside them is left alone.
_DATA = frozenset({"const", "enum", "default", "examples"})


def pointer(*tokens: str | int) -> str:
    """A JSON pointer fragment (``#/a/b``) from unescaped tokens."""
    return "#" + "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


def relocate(schema: Any, at: str) -> Any:
    """``schema`` with every local ``$ref`` rewritten for its new place ``at`` (``#/…``)."""
    if at in ("", "#"):
        return schema
    base = at.rstrip("/")

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                rest = value[1:]
                out[key] = base + rest if (rest == "" or rest.startswith("/")) else value
            elif key in _DATA:
                out[key] = value
            elif key == "properties" and isinstance(value, dict):  # names are data, values schemas
                out[key] = {name: walk(sub) for name, sub in value.items()}
            else:
                out[key] = walk(value)
        return out

    return walk(schema)
