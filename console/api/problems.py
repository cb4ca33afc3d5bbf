"""Errors as `application/problem+json` (RFC 9457): a title, the status, a detail in words, and for
bad input the list of fields with what is wrong with each. A user's bad input is a 4xx, never a 500;
Kafka or Redis unreachable is a 503 that says which."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = []


class ApiProblem(Exception):
    """Raised anywhere in a route: becomes a problem response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.problem = Problem(title=title, status=status, detail=detail, errors=errors or [])
        self.headers = headers


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem.model_dump(), status_code=problem.status, media_type=PROBLEM_JSON, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    # ("body", "params", "n") -> "params.n"; ("query", "limit") -> "limit"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def on_api_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(exc.problem, exc.headers)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [FieldProblem(field=_field_name(tuple(e.get("loc", ()))), message=str(e.get("msg"))) for e in exc.errors()]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return problem_response(Problem(title="Invalid request", status=422, detail=detail, errors=errors))


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = {
        400: "Bad request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
    }.get(exc.status_code, "Error")
    return problem_response(
        Problem(title=title, status=exc.status_code, detail=str(exc.detail)), getattr(exc, "headers", None)
    )


def problem_doc(description: str) -> dict[str, Any]:
    """An error response for the OpenAPI document (what a route may answer), as problem+json."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "model": Problem, "content": {PROBLEM_JSON: {"schema": schema}}}


# What any route may answer besides its own success (documented so clients and fuzzers know them).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: problem_doc("the body could not be read as JSON"),
    401: problem_doc("no token, or an unknown or revoked one"),
    403: problem_doc("the token lacks the scope"),
    404: problem_doc("no such resource"),
    413: problem_doc("request body over the size limit"),
    422: problem_doc("invalid request: `errors` names each field"),
    429: problem_doc("over the token's rate limit; see Retry-After"),
    503: problem_doc("Kafka or Redis unreachable: `detail` says which"),
}
