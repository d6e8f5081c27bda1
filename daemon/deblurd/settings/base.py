"""The base of every settings model (strict, unknown keys rejected, immutable), and the
small amount of model introspection the loader and the docs generator share."""

from __future__ import annotations

import inspect
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo


class Section(BaseModel):
    """A config section. Unknown keys are errors (a typo must never be ignored)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


@dataclass(frozen=True)
class Shape:
    """What a config key holds, as far as the loader and the docs generator need to know.

    ``kind`` is ``"table"`` (a model: ``model``), ``"union"`` (tables told apart by the
    ``discriminator`` key: ``variants`` maps each tag to its model), ``"array"`` (items of
    shape ``item``), ``"map"`` (a table of arbitrary keys, values of shape ``item``) or
    ``"value"`` (anything else: ``annotation``; ``literals`` for a ``Literal``).
    """

    kind: Literal["table", "union", "array", "map", "value"]
    annotation: Any = None
    model: type[BaseModel] | None = None
    variants: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    discriminator: str | None = None
    item: Shape | None = None
    literals: tuple[Any, ...] = ()
    optional: bool = False

    @property
    def text_only(self) -> bool:
        """True when the key accepts nothing but a string (str, or a Literal of strings)."""
        if self.kind != "value":
            return False
        if self.literals:
            return all(isinstance(v, str) for v in self.literals)
        return self.annotation is str


def is_model(tp: Any) -> bool:
    """True for a pydantic model class."""
    return inspect.isclass(tp) and issubclass(tp, BaseModel)


def model_doc(model: type[BaseModel]) -> str:
    """The model's own docstring (not inherited), cleaned; ``""`` when it has none."""
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def field_shape(info: FieldInfo) -> Shape:
    """The shape of a model field (its annotation, with its ``Field(discriminator=...)``)."""
    return annotation_shape(info.annotation, [info, *info.metadata])


def annotation_shape(annotation: Any, metadata: Sequence[Any] = ()) -> Shape:
    """The shape of a type annotation; ``metadata`` may carry a ``FieldInfo`` discriminator."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return annotation_shape(base, [*metadata, *extra])
    if origin is Union or origin is types.UnionType:
        args = get_args(annotation)
        members = [a for a in args if a is not type(None)]
        optional = len(members) < len(args)
        if len(members) == 1:
            inner = annotation_shape(members[0], metadata)
            return replace(inner, optional=optional or inner.optional)
        if all(is_model(m) for m in members):
            disc = _discriminator(members, metadata)
            if disc is not None:
                variants: dict[str, type[BaseModel]] = {}
                for member in members:
                    for tag in get_args(member.model_fields[disc].annotation):
                        variants[str(tag)] = member
                return Shape(
                    "union", annotation, variants=variants, discriminator=disc, optional=optional
                )
        return Shape("value", annotation, optional=optional)
    if origin is Literal:
        return Shape("value", annotation, literals=get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        items = [a for a in get_args(annotation) if a is not Ellipsis]
        item = annotation_shape(items[0]) if items else Shape("value", Any)
        return Shape("array", annotation, item=item)
    if origin is dict:
        pair = get_args(annotation)
        item = annotation_shape(pair[1]) if len(pair) == 2 else Shape("value", Any)
        return Shape("map", annotation, item=item)
    if is_model(annotation):
        return Shape("table", annotation, model=annotation)
    return Shape("value", annotation)


def _discriminator(members: Sequence[type[BaseModel]], metadata: Sequence[Any]) -> str | None:
    """The declared tag key (``Field(discriminator="...")``) of a union of models, if any."""
    for meta in metadata:
        disc = getattr(meta, "discriminator", None)
        if isinstance(disc, str) and all(disc in m.model_fields for m in members):
            return disc
    return None
