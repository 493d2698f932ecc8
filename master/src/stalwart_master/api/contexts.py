from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from stalwart_master.api.deps import CurrentUser, SessionDep, SettingsDep, UserOrAllocation
from stalwart_master.contexts.archive import check_content_length, check_content_type, receive_context
from stalwart_master.schemas.common import problem_responses
from stalwart_master.schemas.contexts import ContextOut
from stalwart_master.services import contexts as contexts_service

router = APIRouter(
    prefix="/api/v1/contexts",
    tags=["contexts"],
    responses=problem_responses(401, 404),
)
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


@router.post(
    "",
    response_model=ContextOut,
    status_code=201,
    responses=problem_responses(400, 413, 415),
    openapi_extra={
        "requestBody": {
            "content": {
                kind: {"schema": {"type": "string", "format": "binary"}}
                for kind in ("application/gzip", "application/x-gzip", "application/octet-stream")
            }
        }
    },
)
async def upload_context(
    request: Request, response: Response, _: CurrentUser, session: SessionDep, settings: SettingsDep
) -> ContextOut:
    """Stream a tar.gz in; refuse it as soon as it is too big, before reading the rest."""
    limits = settings.limits
    check_content_type(request.headers.get("content-type"))
    check_content_length(request.headers.get("content-length"), limits.max_context_bytes)
    archive, content = await receive_context(
        request.stream(),
        content_type=request.headers.get("content-type"),
        max_bytes=limits.max_context_bytes,
        max_unpacked_bytes=limits.context_max_unpacked_bytes,
        max_members=limits.context_max_members,
        max_depth=limits.context_max_depth,
    )

    def store() -> tuple[ContextOut, bool]:
        context, created = contexts_service.store_context(session, archive, content)
        session.commit()
        return ContextOut.model_validate(context), created

    out, created = await run_in_threadpool(store)
    response.status_code = 201 if created else 200
    return out


@router.get("/{sha256}", response_class=Response, responses={200: {"content": {"application/gzip": {}}}})
def download_context(sha256: Sha256, caller: UserOrAllocation, session: SessionDep) -> Response:
    """A trial reads only its own experiment's code; a user only code of experiments they can see."""
    contexts_service.require_readable(session, caller.token, sha256)
    context = contexts_service.get_context(session, sha256, with_content=True)
    return Response(
        content=context.content,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{sha256}.tar.gz"'},
    )


@router.head("/{sha256}", response_class=Response)
def context_exists(sha256: Sha256, _: CurrentUser, session: SessionDep) -> Response:
    """Existence only (for de-duplicated uploads); reading the code is ``GET``'s own check."""
    context = contexts_service.get_context(session, sha256)
    return Response(headers={"Content-Length": "0", "X-Context-Size": str(context.size)})
