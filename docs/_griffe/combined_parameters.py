"""A Griffe extension for the documentation build (mkdocs.yml loads it; it is not part of dpmap).

numpydoc lets one entry document several parameters (``epsilon, delta``). Griffe then gives
every name of the entry the type and default of the *first* one, so the API reference
would show ``delta`` as required and ``lng`` with the default ``'lat'``. For such entries
this sets each name's type and default from the function's signature (for a class, from
``__init__``), which is the truth the docstring describes. Entries of one name are left as
they are.
"""

from __future__ import annotations

from typing import Any

import griffe


class CombinedParameters(griffe.Extension):
    """Types and defaults of combined numpydoc parameter entries taken from the signature."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.is_alias or obj.docstring is None or not (obj.is_function or obj.is_class):
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
