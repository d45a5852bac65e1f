"""Turning request data into a user function's keyword arguments, checked against its type hints.

Each function gets one ``ArgSpec``, compiled once at start-up: a msgspec Struct type built from
the signature, so a JSON body is decoded and validated in a single C pass and a wrong value is
reported with the field's path. Hints msgspec cannot check (a user's own class, say) fall back to
"anything", so a worker never refuses to start because of an exotic annotation.

Pydantic models (the FastAPI way) are validated by pydantic itself: a parameter whose hint holds
a ``BaseModel`` (``Item``, ``Item | None``, ``list[Item]``) gets a real instance, and a value
that does not fit is a 422 naming the field (``item.price``). As in FastAPI, when such a model
is the only argument taken from the body, the body *is* the model (``{"name": ..., "price":
...}``); the form ``{"item": {...}}`` is accepted too. Pydantic is never imported here: a
signature can only use a model if the user's code imported pydantic already.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

_SKIP = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class InvalidArguments(Exception):
    """The input does not fit the function's signature. ``field`` names the culprit if known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {"error": "InvalidArguments", "message": self.message, "field": self.field}


def _field_of(err: msgspec.ValidationError) -> str | None:
    # msgspec reports "... - at `$.a.b[0]`" or "Object missing required field `x`".
    text = str(err)
    if "- at `$." in text:
        path = text.rsplit("- at `$.", 1)[1].rstrip("`")
        return path.split(".", 1)[0].split("[", 1)[0]
    if "missing required field `" in text:
        return text.split("missing required field `", 1)[1].split("`", 1)[0]
    return None


def _checkable(hint: Any) -> bool:
    """Whether msgspec can check values of ``hint`` (no user classes anywhere inside it)."""
    import msgspec.inspect as mi

    try:
        root = mi.type_info(hint)
    except (TypeError, ValueError):
        return False
    seen: set[int] = set()
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, mi.CustomType):
            return False
        if isinstance(node, msgspec.Struct):  # every msgspec.inspect node is a Struct
            stack.extend(getattr(node, name) for name in node.__struct_fields__)
        elif isinstance(node, (tuple, list)):
            stack.extend(node)
    return True


def _models_in(hint: Any) -> bool:
    """Whether ``hint`` is, or holds, a pydantic model class (pydantic already imported)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:
        return False
    stack, seen = [hint], 0
    while stack and seen < 64:
        seen += 1
        node = stack.pop()
        if inspect.isclass(node) and issubclass(node, pydantic.BaseModel):
            return True
        stack.extend(typing.get_args(node))
    return False


class _ModelArgument:
    """One parameter pydantic validates."""

    def __init__(self, name: str, hint: Any) -> None:
        import pydantic

        self.name = name
        self.adapter: Any = pydantic.TypeAdapter(hint)
        self.error: type[Exception] = pydantic.ValidationError
        # A model class itself (not a list or union of them): the body may be its fields.
        self.fields: frozenset[str] | None = (
            frozenset(hint.model_fields)
            if inspect.isclass(hint) and issubclass(hint, pydantic.BaseModel)
            else None
        )

    def validate(self, func_name: str, value: Any) -> Any:
        try:
            return self.adapter.validate_python(value)
        except self.error as err:
            first = err.errors()[0]  # type: ignore[attr-defined]
            where = ".".join(str(part) for part in first.get("loc", ()))
            field = f"{self.name}.{where}" if where else self.name
            raise InvalidArguments(
                f"{func_name}: {first.get('msg', 'invalid value')} - at `$.{field}`", field
            ) from None


class MalformedBody(InvalidArguments):
    """The request body is not JSON at all (a 400, where arguments that do not fit are 422)."""


def _malformed(err: Exception) -> MalformedBody:
    if isinstance(err, RecursionError):
        return MalformedBody("request body is nested too deeply")
    return MalformedBody(f"request body is not valid JSON: {err}")


def decode_object(body: bytes) -> dict[str, Any]:
    """A JSON object request body (empty: ``{}``), or InvalidArguments saying what it is."""
    if not body.strip():
        return {}
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as err:
        raise _malformed(err) from None
    if not isinstance(data, dict):
        raise InvalidArguments(
            f"request body must be a JSON object of arguments, got {type(data).__name__}"
        )
    return data


def decode_any(body: bytes) -> Any:
    """A JSON request body of any type (a 2.0 app's route takes the whole body)."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as err:
        raise _malformed(err) from None


class ArgSpec:
    """The keyword arguments a function takes, as a msgspec type."""

    def __init__(self, func: Callable[..., Any], *, skip_first: bool = False) -> None:
        self.func_name = getattr(func, "__qualname__", repr(func))
        signature = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable forward references: check nothing, accept anything
            hints = {}
        params = list(signature.parameters.values())
        if skip_first and params:
            params = params[1:]
        self.accepts_extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        names = []
        self.models: dict[str, _ModelArgument] = {}
        for p in params:
            if p.kind in _SKIP:
                continue
            hint = hints.get(p.name, Any)
            if _models_in(hint):
                self.models[p.name] = _ModelArgument(p.name, hint)
                hint = Any
            elif not _checkable(hint):
                hint = Any
            names.append(p.name)
            if p.default is inspect.Parameter.empty:
                fields.append((p.name, hint))
            else:
                # UNSET instead of the real default: the function applies its own default, so
                # mutable or exotic defaults behave exactly as in a direct call.
                fields.append((p.name, hint | msgspec.UnsetType, msgspec.UNSET))
        self.names = tuple(names)
        self.struct: type[msgspec.Struct] = msgspec.defstruct(
            f"{func.__name__}_arguments", fields, kw_only=True
        )
        self._decoder = msgspec.json.Decoder(self.struct)

    def _kwargs(self, obj: msgspec.Struct) -> dict[str, Any]:
        kwargs = {
            name: value for name in self.names if (value := getattr(obj, name)) is not msgspec.UNSET
        }
        for name, model in self.models.items():
            if name in kwargs:
                kwargs[name] = model.validate(self.func_name, kwargs[name])
        return kwargs

    def shape(self, data: dict[str, Any], fixed: typing.Collection[str] = ()) -> dict[str, Any]:
        """FastAPI's body for a lone model argument: when the only argument not in ``fixed``
        (path parameters, the request) is a model, ``data``'s other keys are that model's
        fields, unless they are exactly ``{name: {...}}`` and the model has no field ``name``."""
        body = [n for n in self.names if n not in fixed]
        model = self.models.get(body[0]) if len(body) == 1 else None
        if model is None or model.fields is None:
            return data
        rest = {k: v for k, v in data.items() if k not in fixed}
        if set(rest) == {model.name} and model.name not in model.fields:
            return data
        shaped = {k: v for k, v in data.items() if k in fixed}
        shaped[model.name] = rest
        return shaped

    def _extras(self, data: Mapping[str, Any]) -> dict[str, Any]:
        if not self.accepts_extra:
            return {}
        return {k: v for k, v in data.items() if k not in self.names}

    def from_json(self, body: bytes) -> dict[str, Any]:
        """Keyword arguments from a JSON object body (empty body: no arguments)."""
        if not body.strip():
            return self.from_mapping({})
        if self.accepts_extra or self.models:
            return self.from_mapping(decode_object(body))
        try:
            return self._kwargs(self._decoder.decode(body))
        except msgspec.ValidationError as err:
            raise InvalidArguments(f"{self.func_name}: {err}", _field_of(err)) from None
        except (msgspec.DecodeError, RecursionError) as err:
            raise _malformed(err) from None

    def from_mapping(
        self, data: Mapping[str, Any], *, strict: bool = True, fixed: typing.Collection[str] = ()
    ) -> dict[str, Any]:
        """Keyword arguments from already-decoded data.

        ``strict=False`` converts strings (query strings, path segments) to the hinted types.
        ``fixed``: the names that are not from the body (see :meth:`shape`).
        """
        data = self.shape(dict(data), fixed) if self.models else data
        try:
            obj = msgspec.convert(data, self.struct, strict=strict)
        except msgspec.ValidationError as err:
            raise InvalidArguments(f"{self.func_name}: {err}", _field_of(err)) from None
        except RecursionError as err:
            raise _malformed(err) from None
        kwargs = self._kwargs(obj)
        kwargs.update(self._extras(data))
        return kwargs
