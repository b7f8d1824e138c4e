"""Request bodies (JSON or form) read strictly, and the OpenAPI notes routes carry about them.

A body is UTF-8 or it is refused; a form is parsed here, not by the framework, so bytes that
are not UTF-8 are a 422 and never silently replaced (a password must arrive as it was typed).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast, get_args, get_origin
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from quart import Response, current_app, request
from quart.globals import _cv_app
from quart_schema import DataSource, validate_response
from quart_schema.validation import (
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
    QUART_SCHEMA_RESPONSE_ATTRIBUTE,
)

from service.core.errors import APIError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

# A view's answer: a model, its status and headers (quart-schema turns the model into JSON).
ModelResponse = tuple[BaseModel, int, dict[str, str]]

NO_CONTENT_ATTRIBUTE = "_auth_no_content"
TEXT_RESPONSE_ATTRIBUTE = "_auth_text_response"
PROBLEMS_ATTRIBUTE = "_auth_problem_responses"
MEDIA_TYPES_ATTRIBUTE = "_auth_request_media_types"
BODY_REQUIRED_ATTRIBUTE = "_auth_request_body_required"
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
# Token-bearing answers are never stored by caches (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_FIELDS = 32
MAX_JSON_DEPTH = 8


def documents_errors(*errors: type[APIError]) -> Callable[[F], F]:
    """Record the problems a route can answer with, for its OpenAPI responses."""

    def decorator(func: F) -> F:
        problems: dict[int, list[str]] = {
            status: list(titles) for status, titles in getattr(func, PROBLEMS_ATTRIBUTE, {}).items()
        }
        for error in errors:
            titles = problems.setdefault(error.status, [])
            if error.title not in titles:
                titles.append(error.title)
        setattr(func, PROBLEMS_ATTRIBUTE, problems)
        return func

    return decorator


def documents_no_content(func: F) -> F:
    """Record that the route answers 204 No Content on success."""
    setattr(func, NO_CONTENT_ATTRIBUTE, True)
    return func


def documents_text(media_type: str, description: str) -> Callable[[F], F]:
    """Record that the route answers 200 with a text body of ``media_type`` (not JSON)."""

    def decorator(func: F) -> F:
        setattr(func, TEXT_RESPONSE_ATTRIBUTE, (media_type, description))
        return func

    return decorator


def validation_errors(exc: ValidationError, source: str = "body") -> list[dict[str, Any]]:
    """The errors as the problem's ``errors``: ``loc`` starts with where the value was sent
    (``body``, ``query`` or ``header``). The input is left out on purpose: it may be a password."""
    return [{"loc": [source, *error["loc"]], "msg": error["msg"]} for error in exc.errors()]


def _invalid_body(message: str) -> ValidationFailed:
    return ValidationFailed([{"loc": ["body"], "msg": message}], detail=message)


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            break
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
    return depth


async def read_body(media_types: tuple[str, ...]) -> dict[str, Any]:
    """The request body as a dict, from JSON or an urlencoded form (as the route allows)."""
    mimetype = request.mimetype
    if mimetype not in media_types:
        raise UnsupportedMediaType(f"Send the body as {' or '.join(media_types)}.")
    raw = await request.get_data(cache=True, as_text=False)
    if isinstance(raw, str):
        raw = raw.encode()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_body("The body is not valid UTF-8.") from None
    if mimetype == FORM_TYPE:
        try:
            pairs = parse_qsl(
                text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS
            )
        except UnicodeDecodeError:
            raise _invalid_body("The form is not valid UTF-8.") from None
        except ValueError:
            raise _invalid_body("The form has too many fields.") from None
        form: dict[str, Any] = {}
        for key, value in pairs:
            # A repeated field becomes a list, which no string field accepts.
            if key not in form:
                form[key] = value
            elif isinstance(form[key], list):
                form[key].append(value)
            else:
                form[key] = [form[key], value]
        return form
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid_body("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise _invalid_body("The body must be a JSON object.")
    if _depth(data) > MAX_JSON_DEPTH:
        raise _invalid_body("The JSON body is nested too deeply.")
    return data


def parse_model(model_class: type[M], data: dict[str, Any]) -> M:
    try:
        return model_class.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc)) from None


def validate_body(
    model_class: type[BaseModel], *, media_types: tuple[str, ...] = (JSON_TYPE, FORM_TYPE)
) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Parse the body into ``model_class`` and pass it to the view as ``data``; else a 4xx."""

    def decorator(view: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> R:
            data = parse_model(model_class, await read_body(media_types))
            result: R = await current_app.ensure_async(view)(*args, data=data, **kwargs)
            return result

        return documents_body(model_class, media_types=media_types)(wrapper)

    return decorator


BODY_ERRORS: tuple[type[APIError], ...] = (ValidationFailed, UnsupportedMediaType, PayloadTooLarge)


def documents_body(
    model_class: type[BaseModel],
    *,
    media_types: tuple[str, ...] = (JSON_TYPE, FORM_TYPE),
    errors: tuple[type[APIError], ...] = BODY_ERRORS,
    required: bool = True,
) -> Callable[[F], F]:
    """Publish the request body schema and its errors. The document shows the body under the
    first of ``media_types`` and names the others in text (service/web/openapi.py says why);
    the route must still accept them all. ``required=False``: the body may be left out."""

    def decorator(view: F) -> F:
        setattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE, (model_class, DataSource.JSON))
        setattr(view, MEDIA_TYPES_ATTRIBUTE, media_types)
        setattr(view, BODY_REQUIRED_ATTRIBUTE, required)
        return documents_errors(*errors)(view)

    return decorator


# Field types whose JSON is the same from pydantic's serialiser as from the app's JSON provider
# (Python's json: sorted keys, ASCII only, compact): strings (checked ASCII per answer), ints,
# booleans, null, UUIDs, and lists of strings. Floats, dates and nested models are not.
_PLAIN_TYPES: frozenset[Any] = frozenset({str, int, bool, uuid.UUID, type(None)})


def _plain_field(annotation: Any) -> bool:
    if annotation in _PLAIN_TYPES:
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        return args == (str,)
    # X | None
    return bool(args) and origin is not None and all(arg in _PLAIN_TYPES for arg in args)


def serialises_plainly(model_class: type[BaseModel]) -> bool:
    """Whether pydantic's own JSON of ``model_class`` is byte for byte what the app's JSON
    provider makes of its ``model_dump()`` (for an ASCII answer): flat, plain field types,
    fields in sorted order, no aliases and no custom serialisers."""
    fields = model_class.model_fields
    decorators = model_class.__pydantic_decorators__
    return (
        list(fields) == sorted(fields)
        and not decorators.field_serializers
        and not decorators.model_serializers
        and not decorators.computed_fields
        and all(
            field.alias is None
            and field.serialization_alias is None
            and not field.exclude
            and _plain_field(field.annotation)
            for field in fields.values()
        )
    )


def responds(
    model_class: type[M], status_code: int = 200
) -> Callable[[Callable[P, Awaitable[Any]]], Callable[P, Awaitable[Any]]]:
    """quart-schema's ``validate_response(model_class, status_code)``, the same answers and the
    same document, less work per request: a view that returns an instance of the model itself
    (already validated where it was built) gets its JSON response made here at once, with the
    bytes the app's JSON provider would give; any other return value (a tuple, a dict, another
    status) goes through quart-schema's validation as before.

    Most of a guarded GET's response time went to the generic path: quart-schema's wrapper,
    its conversion of the body and the headers (each through ``current_app`` lookups), then
    the JSON provider on the dumped dict.
    """
    plain = serialises_plainly(model_class)
    serializer = model_class.__pydantic_serializer__

    def decorator(view: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
        async def returning(result: Any) -> Any:
            return result

        validated = validate_response(model_class, status_code)(returning)

        @wraps(view)
        async def answered(*args: P.args, **kwargs: P.kwargs) -> Any:
            result = await view(*args, **kwargs)
            # A bare model is answered 200, and validated only where the route declares 200.
            if status_code == 200 and type(result) is model_class:
                response = _model_response(result, serializer if plain else None)
                if response is not None:
                    return response
            return await validated(result)

        schemas = dict(getattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, {}))
        schemas[status_code] = (model_class, None)
        setattr(answered, QUART_SCHEMA_RESPONSE_ATTRIBUTE, schemas)
        return answered

    return decorator


def _model_response(model: BaseModel, serializer: Any) -> Response | None:
    """The JSON response of ``model`` as quart-schema and the JSON provider would make it, or
    None where the app's settings ask for something else (camelCase keys, dump options)."""
    app = _cv_app.get().app
    config = app.config
    if config.get("QUART_SCHEMA_CONVERT_CASING") or config.get(
        "QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS"
    ):
        return None
    provider = app.json
    compact = getattr(provider, "compact", None)
    pretty = compact is False or (compact is None and app.debug)
    if serializer is not None and not pretty:
        body: bytes = serializer.to_json(model)
        if body.isascii():
            return app.response_class(body + b"\n", mimetype=provider.mimetype)  # type: ignore[attr-defined]
    return cast(Response, provider.response(model.model_dump()))
