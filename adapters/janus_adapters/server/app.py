"""The FastAPI app: OpenAI-compatible /v1 endpoints, /health, the web page; one worker for one model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from janus_adapters.server.chat import chat_router
from janus_adapters.server.errors import install_error_handlers
from janus_adapters.server.identity import ServedModel, checkpoint_name
from janus_adapters.server.images import images_router
from janus_adapters.server.schemas import ModelCard, ModelList
from janus_adapters.server.security import BodyLimit, api_key_dependency
from janus_adapters.server.settings import ServerSettings
from janus_adapters.server.state import ServerState
from janus_adapters.server.worker import Worker
from janus_adapters.web import STATIC_DIR
from janus_sdk.pipeline.janus import JanusPipeline

PAGE_LIMITS = {"max_n", "max_tokens", "default_max_tokens", "max_chat_images"}
"""The limits /health reports, so that the web page's inputs stay within them."""


def create_app(pipeline: JanusPipeline, settings: ServerSettings | None = None) -> FastAPI:
    """An app serving `pipeline`; its worker thread runs between the app's startup and shutdown."""
    settings = settings or ServerSettings()
    state = ServerState(
        pipeline,
        served_model(pipeline, settings),
        settings,
        Worker(settings.max_queue, settings.batch_window_ms / 1000),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.worker.start()
        try:
            yield
        finally:
            state.worker.close()

    app = FastAPI(
        title="Janus server",
        version="1",
        lifespan=lifespan,
        description="OpenAI-compatible chat (with images) and image generation with one Janus model.",
    )
    app.state.janus = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)

    v1 = APIRouter(dependencies=[Depends(api_key_dependency(settings.api_key))])
    v1.include_router(chat_router(state))
    v1.include_router(images_router(state))

    @v1.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        """The one served model."""
        return ModelList(data=[_card(state)])

    @v1.get("/v1/models/{model}", response_model=ModelCard)
    async def get_model(model: str) -> ModelCard:
        """The served model, by id (404 for any other)."""
        state.check_model(model)
        return _card(state)

    app.include_router(v1)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, the model (and whether it is a test model), the limits, the queue and request counters;
        never needs the API key (the web page reads it before it has one)."""
        return {
            "status": "ok",
            "model": state.model.name,
            "parameters": state.model.parameters,
            "test_model": state.model.test_model,
            "auth": settings.api_key is not None,
            "limits": settings.model_dump(include=PAGE_LIMITS),
            "queue": state.worker.status(),
        }

    if settings.web_ui:
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html")

    return app


def served_model(pipeline: JanusPipeline, settings: ServerSettings) -> ServedModel:
    """The model as clients see it: named by the operator, else by the checkpoint (see `identity`)."""
    name = settings.model_name or checkpoint_name(pipeline.config.checkpoint or "janus")
    return ServedModel(name, sum(pipeline.model.parameter_counts().values()))


def _card(state: ServerState) -> ModelCard:
    return ModelCard(id=state.model.name, created=state.created)
