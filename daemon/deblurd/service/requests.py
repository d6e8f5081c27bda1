"""The control requests' schema (DESIGN §4): pydantic models, one per ``cmd``.

A request is a JSON object told apart by ``cmd`` (a discriminated union): ``trigger``,
``status`` or ``ping``, none with further keys today. Models are strict (no coercion:
``"cmd": 1`` is not ``"1"``) and refuse unknown keys, so a typo in a client is an error
reply rather than something silently ignored. New commands and optional keys are
additive: a new model here and a handler in the daemon.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from deblurd.errors import DeblurdError


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TriggerRequest(_Request):
    """Press the shutter; the trigger's time is taken when the request arrives."""

    cmd: Literal["trigger"]


class StatusRequest(_Request):
    """The daemon's state."""

    cmd: Literal["status"]


class PingRequest(_Request):
    """Liveness check: ``{"ok": true}``."""

    cmd: Literal["ping"]


Request = Annotated[TriggerRequest | StatusRequest | PingRequest, Field(discriminator="cmd")]
COMMANDS: tuple[str, ...] = ("ping", "status", "trigger")

_ADAPTER: TypeAdapter[TriggerRequest | StatusRequest | PingRequest] = TypeAdapter(Request)


class SchemaError(DeblurdError):
    """A JSON object that is not a valid request: ``code`` is ``bad_request`` or
    ``unknown_command``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_request(doc: dict[str, Any]) -> TriggerRequest | StatusRequest | PingRequest:
    """The request model for a decoded JSON object, or :class:`SchemaError`.

    Messages name the key and the problem but never echo more than a few characters of
    what the peer sent (replies and logs stay small whatever the request holds)."""
    cmd = doc.get("cmd")
    if cmd is None:
        raise SchemaError("bad_request", 'missing "cmd" (one of ping, status, trigger)')
    if not isinstance(cmd, str):
        raise SchemaError("bad_request", f'"cmd" must be a string, got {type(cmd).__name__}')
    try:
        return _ADAPTER.validate_python(doc)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "union_tag_invalid" for e in errors):
            raise SchemaError(
                "unknown_command",
                f"unknown cmd {_short(cmd)} (known: {', '.join(COMMANDS)})",
            ) from exc
        problems = []
        for e in errors[:4]:
            key = ".".join(str(p) for p in e["loc"][1:]) or "(request)"
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown key {_short(key)}")
            else:
                problems.append(f"{_short(key)}: {e['msg']}")
        raise SchemaError("bad_request", f"bad {cmd!r} request: " + "; ".join(problems)) from exc
