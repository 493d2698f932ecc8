"""Pieces shared by every config section: the strict base model and error helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

# The error type of every rule written here; messages.py shows its message unchanged.
ERROR_TYPE = "stalwart"

Loc = tuple[str | int, ...]

# Where a config integer ends up: INTEGER columns (ids, counts), BIGINT ones (steps, bytes), and
# JSON that every reader must parse back exactly.
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class Section(BaseModel):
    """Base of every config model: unknown keys are errors and YAML types are taken as written.

    Strict mode stops pydantic from turning ``"5"`` into ``5`` or ``true`` into ``1``: a config
    that says something odd should be told so, not silently reinterpreted.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def custom_error(message: str) -> PydanticCustomError:
    # The message travels in the context so braces in it are never read as a template.
    return PydanticCustomError(ERROR_TYPE, "{message}", {"message": message})


def field_error(loc: Loc, message: str, value: Any = None) -> ValidationError:
    """A one-error ``ValidationError`` at ``loc`` relative to the model that raises it.

    Raised from a validator, pydantic prefixes the enclosing location, so a rule can name the exact
    field it is about instead of the model as a whole.
    """
    return field_errors([(loc, message, value)])


def field_errors(items: Sequence[tuple[Loc, str, Any]]) -> ValidationError:
    details = [InitErrorDetails(type=custom_error(msg), loc=loc, input=value) for loc, msg, value in items]
    return ValidationError.from_exception_data("ExperimentConfig", details)


def check(predicate: Callable[[Any], bool], message: str) -> AfterValidator:
    """An ``AfterValidator`` that rejects values failing ``predicate`` with ``message``."""

    def validate(value: Any) -> Any:
        if not predicate(value):
            raise custom_error(message)
        return value

    return AfterValidator(validate)


NonBlank = Annotated[str, check(lambda s: s.strip() != "", "must not be empty")]
