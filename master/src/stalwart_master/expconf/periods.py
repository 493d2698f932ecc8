"""Training lengths: ``{batches|epochs|records: N}`` periods and the wall-clock checkpoint period."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from stalwart_master.expconf.common import INT64_MAX, Section, custom_error

PERIOD_UNITS = ("batches", "epochs", "records")


class Period(Section):
    """A training length in exactly one unit, e.g. ``{batches: 1000}``."""

    batches: int | None = Field(default=None, ge=0, le=INT64_MAX)
    epochs: int | None = Field(default=None, ge=0, le=INT64_MAX, description="Needs records_per_epoch > 0.")
    records: int | None = Field(default=None, ge=0, le=INT64_MAX)

    @model_validator(mode="after")
    def _exactly_one_unit(self) -> Self:
        if sum(getattr(self, unit) is not None for unit in PERIOD_UNITS) != 1:
            raise custom_error("must set exactly one of batches, epochs, records")
        return self

    @model_serializer(mode="wrap")
    def _only_the_unit(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}

    def unit(self) -> tuple[str, int]:
        """The one unit that is set and its length, e.g. ``("batches", 1000)``."""
        for name in PERIOD_UNITS:
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("a validated Period always has a unit")


class TimePeriod(Section):
    """A wall-clock interval, e.g. ``{minutes: 30}``: how often to checkpoint whatever else happens."""

    minutes: float = Field(gt=0, description="Minutes between checkpoints; fractions allowed.")


def period_from_int(value: Any) -> Any:
    # Determined also accepts a bare number for the deprecated max_length; read it as batches.
    if isinstance(value, int) and not isinstance(value, bool):
        return {"batches": value}
    return value
