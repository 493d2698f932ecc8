from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class FieldProblem(BaseModel):
    path: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details; ``errors`` lists failing field paths for 422s."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries so generated clients know every error body is a Problem."""
    return {
        s: {
            "model": Problem,
            "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
        }
        for s in statuses
    }
