"""MONAI Label's ``POST /infer/{model}`` served in a worker thread, so that the server answers every other request
(``/info/``, the datastore, training status, Slicer's refresh) while an inference runs.

MONAI Label 0.8.5's route is an ``async def`` that calls the inference synchronously, on the event loop: one
inference of a large photograph (minutes on a CPU) holds every request until it ends: ``/info/`` asked 3 s into a
2000x2000 inference with the shipped weights answered after 109 s, when the inference ended; with this endpoint it
answered in 0.04 s, the inference taking as long (docs/monailabel.md).
:func:`serve_inference_in_threads` puts a route before it, when the server starts, whose endpoint runs MONAI Label's
own ``run_inference`` (same parameters, same responses, same errors) in Starlette's thread pool.

Why not several uvicorn workers (``start_server --workers N``)? Each worker is a process with its own app: MONAI
Label keeps the training task and its process, which ``/train/`` reports and stops and which refuse a second
training while one runs, in memory of the worker that started it (``monailabel.utils.async_tasks``), so another
worker would report no training and start a second one; each worker would also hold its own copy of the network and
watch the datastore. A thread keeps one app, one state, one network.

Inferences still run one at a time, as before (a lock): two on the same cores would both take twice as long, and
MONAI Label's network cache is not made for concurrent reloads.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, File, Form, UploadFile
from monailabel.config import RBAC_USER, settings
from monailabel.endpoints import infer
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.user.auth import RBAC, User
from starlette.concurrency import run_in_threadpool

__all__ = ["INFER_PATH", "api_run_inference", "serve_inference_in_threads"]

# The route MONAI Label's inference endpoint (monailabel/endpoints/infer.py) is served at.
INFER_PATH = f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}"
_one_inference = threading.Lock()


def _run_inference_alone(*args: Any) -> Any:
    with _one_inference:
        return run_inference(*args)


async def api_run_inference(
    background_tasks: BackgroundTasks,
    model: str,
    user: Annotated[User, Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))],
    image: str = "",
    session_id: str = "",
    params: Annotated[str, Form()] = "{}",
    file: Annotated[UploadFile | None, File()] = None,
    label: Annotated[UploadFile | None, File()] = None,
    output: ResultType | None = None,
):
    """MONAI Label's ``api_run_inference`` (same parameters), with ``run_inference`` in a worker thread."""
    return await run_in_threadpool(
        _run_inference_alone, background_tasks, model, image, session_id, params, file, label, output
    )


def serve_inference_in_threads(app: FastAPI) -> None:
    """Serve ``POST /infer/{model}`` in ``app`` by :func:`api_run_inference`, with the summary, tags and documented
    responses of MONAI Label's route. The route goes first in ``app``'s routes, so it is the one that matches
    (routes match in order), whether FastAPI copies the routes of MONAI Label's included ``infer.router`` into
    ``app`` (older releases) or looks them up in that router at each request (newer ones).

    Args:
        app: MONAI Label's FastAPI application (``monailabel.app.app``).
    """
    app.router.add_api_route(
        INFER_PATH,
        api_run_inference,
        methods=["POST"],
        summary=f"{RBAC_USER}Run Inference for supported model",
        tags=infer.router.tags,
        responses=infer.router.responses,
    )
    app.router.routes.insert(0, app.router.routes.pop())
    app.openapi_schema = None
