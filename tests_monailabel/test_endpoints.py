"""``POST /infer/{model}`` served by an endpoint that runs MONAI Label's inference in a worker thread: the route
matches before MONAI Label's own, has its parameters (MONAI Label's route is the oracle), and requests reach MONAI
Label's ``run_inference``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from monailabel.endpoints import infer, session

from iternet_monai.apps.monailabel.endpoints import INFER_PATH, api_run_inference, serve_inference_in_threads


def parameters(route) -> dict[str, list[str]]:
    dependant = route.dependant
    return {
        "query": sorted(p.name for p in dependant.query_params),
        "path": sorted(p.name for p in dependant.path_params),
        "body": sorted(p.name for p in dependant.body_params),
        "dependencies": [type(d.call).__name__ for d in dependant.dependencies],
    }


def monailabel_like_app() -> tuple[FastAPI, list]:
    """An app with MONAI Label's session and inference routers, as ``monailabel.app`` includes them, and the
    endpoint each request was routed to."""
    app = FastAPI()
    app.include_router(session.router)
    app.include_router(infer.router)
    endpoints = []

    @app.middleware("http")
    async def record(request, call_next):
        response = await call_next(request)
        endpoints.append(request.scope.get("endpoint"))
        return response

    return app, endpoints


def test_inference_requests_reach_run_inference_through_the_threaded_endpoint_with_monailabels_parameters():
    original = next(r for r in infer.router.routes if r.path == INFER_PATH)
    app, endpoints = monailabel_like_app()
    client = TestClient(app)
    client.post("/infer/iternet")
    assert endpoints == [original.endpoint]  # MONAI Label's own route, before

    serve_inference_in_threads(app)
    route = app.router.routes[0]
    assert route.path == INFER_PATH and route.methods == {"POST"} and route.endpoint is api_run_inference
    assert parameters(route) == parameters(original)
    assert route.summary == original.summary and route.tags == original.tags

    response = client.post("/infer/iternet")  # no image: MONAI Label's run_inference refuses it
    assert endpoints[-1] is api_run_inference
    assert response.status_code == 500 and "Neither Image nor File" in response.json()["detail"]
    assert client.post("/session/", files={"files": ("x.png", b"x")}).status_code != 404  # other routes still served
