"""A Griffe extension for the documentation build (mkdocs.yml loads it; it is not part of dpmap).

dpmap's docstrings are numpydoc written for readers of the source; three habits of theirs
render badly in the API reference, and this fixes each one there (the source is not
changed):

1. **Combined entries.** numpydoc lets one entry document several parameters
   (``epsilon, delta``). Griffe then gives every name of the entry the type and default
   of the *first* one, so ``delta`` would show as required and ``lng`` with the default
   ``'lat'``. For such entries each name's type and default are taken from the signature
   (for a class, from ``__init__``). Entries of one name are left as they are.
2. **Sphinx roles.** ``:func:`dpmap.explain``` and ``:class:`~dpmap.Release``` would show
   literally; they become inline code (``~`` keeps the last dotted name, as in Sphinx).
3. **Definition lists in prose.** A term on its own line followed by an indented
   description (outside the structured sections: Parameters, Returns, Raises, ...)
   would run into one paragraph in Markdown; it becomes a Markdown definition list
   (``def_list`` in mkdocs.yml).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|ref):`([^`]+)`")
TITLED = re.compile(r"^(.*?)\s*<([^>]+)>$")
#: numpydoc sections whose items griffe parses itself (left alone by the prose rewrite)
STRUCTURED = {
    "parameters",
    "other parameters",
    "returns",
    "yields",
    "receives",
    "raises",
    "warns",
    "attributes",
    "methods",
    "functions",
    "classes",
    "modules",
}


def _role(match: re.Match[str]) -> str:
    text = match.group(1)
    titled = TITLED.match(text)
    if titled:
        return f"`{titled.group(1)}`"
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    return f"`{text}`"


def _definition_lists(text: str) -> str:
    """Terms at the left margin, each directly followed by an indented description
    (outside the structured sections), as Markdown definition lists."""
    lines = text.split("\n")
    out: list[str] = []
    section = ""
    fence = False
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        if nxt.strip() and set(nxt.strip()) == {"-"} and line.strip():
            section = line.strip().lower()
        prev = out[-1] if out else ""
        is_term = (
            not fence
            and section not in STRUCTURED
            and line.strip()
            and not line.startswith(" ")
            and (not prev.strip() or prev.startswith((" ", ":   ")))
            and nxt.startswith("    ")
            and nxt.strip()
            and not set(nxt.strip()) <= {"-", "="}
        )
        if is_term:
            if prev.strip():
                out.append("")  # a term right after a description starts a new item
            out.append(line)
            lines[i + 1] = ":   " + nxt.strip()
            continue
        out.append(line)
    return "\n".join(out)


class ReadableDocstrings(griffe.Extension):
    """Readable API reference from dpmap's numpydoc docstrings (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.is_alias or obj.docstring is None:
            return
        obj.docstring.value = _definition_lists(ROLE.sub(_role, obj.docstring.value))
        if not (obj.is_function or obj.is_class):
            return
        try:
            signature = obj.parameters
        except (AttributeError, KeyError, ValueError):
            return
        sections = obj.docstring.parse()
        for section in sections:
            if section.kind is not griffe.DocstringSectionKind.parameters:
                continue
            items = section.value
            for i, item in enumerate(items):
                # the names of one entry share the very same description object
                combined = any(
                    other is not item and other.description is item.description
                    for other in items[max(0, i - 8) : i + 9]
                )
                if combined and item.name in signature:
                    param = signature[item.name]
                    item.value = param.default
                    if param.annotation is not None:
                        item.annotation = param.annotation
        obj.docstring.__dict__["parsed"] = sections  # what the templates read
