"""The HTTP API of `dlkit serve` (FastAPI): POST /predict, GET /health, GET /info, and the OpenAPI docs.

`POST /predict {"inputs": [...]}` answers `{"outputs": [...], "warnings": [...]}`: one output per input with the
fields `dlkit predict -f jsonl` prints (label, probability, top; translation; fills), and a warning for each text
the model's length limit cut. Texts are given as they are; images as base64 (of a PNG/JPEG file or a .npy array;
a `data:` URL prefix is allowed) and their output's `input` is their position in the request. A bad request gets a
4xx answer `{"error": "<field>: <what is wrong>"}` and the server goes on serving.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import os
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

import dlkit
from dlkit import inference
from dlkit.errors import DlkitError
from dlkit.serving.batching import Batcher, InputError, Predict

MAX_BEAM = 64  # a wider beam would hold the model thread for every other request


class PredictRequest(BaseModel):
    """What to predict."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is refused, not ignored

    inputs: list[str] = Field(description="Texts (seq2seq: source sentences; masked LM: texts with [MASK]), or "
                                          "images as base64 strings (PNG/JPEG or .npy bytes).")
    top_k: int | None = Field(None, ge=1, description="Classifiers: the k most likely labels; masked LM: k fills.")
    beam_size: int | None = Field(None, ge=1, le=MAX_BEAM, description="Seq2seq: beam search width (1: greedy).")


class PredictResponse(BaseModel):
    """One output per input, in order, and what the server changed on the way (texts cut to the model's limit)."""

    outputs: list[dict[str, Any]]
    warnings: list[str] = []


def create_app(loaded: inference.Loaded, max_batch_size: int = 64, batch_timeout_ms: float = 2.0) -> FastAPI:
    """The app serving one trained run."""
    images = loaded.datamodule.kind == "image_classification"
    batcher = Batcher(_predictor(loaded), max_batch_size, batch_timeout_ms / 1000, input_errors=(inference.BadInput,))
    about = describe(loaded, images)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        # what is loaded now stays: the collector's full passes would walk torch's millions of objects again
        # and again (300 ms pauses of every request in flight, measured), and never free any of them
        gc.collect()
        gc.freeze()
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="dlkit serve", version=dlkit.__version__, lifespan=lifespan,
                  summary=f"{about['model']} trained in {about['run']}")

    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest) -> Response:
        """Predict a batch of inputs (batched with other requests that arrive at the same time)."""
        if not request.inputs:
            raise HTTPException(422, "inputs: empty: give at least one input")
        if len(request.inputs) > max_batch_size:
            raise HTTPException(413, f"inputs: {len(request.inputs)} inputs; this server takes at most "
                                     f"{max_batch_size} per request (dlkit serve --max-batch-size)")
        options = {k: v for k, v in (("top_k", request.top_k), ("beam_size", request.beam_size)) if v is not None}
        inputs = [_image_bytes(i, item) for i, item in enumerate(request.inputs)] if images else request.inputs
        answers = await batcher.submit(inputs, options)
        outputs = [{**record, "input": i} for i, (record, _) in enumerate(answers)] if images else \
            [record for record, _ in answers]
        warnings = [f"inputs[{i}]: longer than the model's {cut} tokens; only the first {cut} were read"
                    for i, (_, cut) in enumerate(answers) if cut]
        # the answer as JSON text at once (FastAPI would validate it against PredictResponse again first)
        return Response(json.dumps({"outputs": outputs, "warnings": warnings}), media_type="application/json")

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while the server takes requests (503 if its batcher has stopped)."""
        return JSONResponse({"status": "ok"} if batcher.running else {"status": "failed"},
                            status_code=200 if batcher.running else 503)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The run served, its model and classes, the batching settings and what the server has done so far."""
        batching = {"max_batch_size": max_batch_size, "batch_timeout_ms": batch_timeout_ms,
                    **asdict(batcher.counters)}
        return {**about, "pid": os.getpid(), "threads": torch.get_num_threads(), "batching": batching}

    _one_line_errors(app)
    return app


def describe(loaded: inference.Loaded, images: bool) -> dict[str, Any]:
    """What `GET /info` says about the run: id, folder, checkpoint, model, data kind, classes, dlkit version."""
    from dlkit.runs.query import Run

    spec = loaded.datamodule.spec
    return {"run": Run.load(loaded.run_dir).id if loaded.run_dir else str(loaded.checkpoint),
            "run_dir": str(loaded.run_dir) if loaded.run_dir else None, "checkpoint": str(loaded.checkpoint),
            "model": type(loaded.task.model).__name__, "kind": spec.kind, "classes": spec.class_names,
            "input": "image (base64 of a PNG/JPEG file or a .npy array)" if images else "text",
            "max_length": spec.max_length, "dlkit_version": dlkit.__version__}


def _predictor(loaded: inference.Loaded) -> Predict:
    """The batcher's model call for a whole batch: per input, predict's record and, for a text cut to the model's
    length limit, that limit."""

    def predict(inputs: list[Any], options: dict[str, Any]) -> list[tuple[dict[str, Any], int | None]]:
        records = inference.predict(loaded, inputs, batch_size=len(inputs), **options)
        return list(zip(records, loaded.datamodule.overlong(inputs)))

    return predict


def _image_bytes(index: int, item: str) -> bytes:
    """An image given as base64 (optionally a data: URL), decoded."""
    text = item.split(",", 1)[1] if item.startswith("data:") and "," in item else item
    try:
        return base64.b64decode("".join(text.split()), validate=True)  # (line breaks of wrapped base64 dropped)
    except (binascii.Error, ValueError) as err:
        raise InputError(index, f"not base64 ({err}); send images as base64 of a PNG/JPEG file or .npy "
                                "array") from err


def _one_line_errors(app: FastAPI) -> None:
    """Every error as {"error": "<field>: <what is wrong>"}, with a 4xx status for the client's mistakes."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        kind, place = first.get("type"), first.get("loc", ())[1:]
        if kind == "json_invalid":
            message = f"body: not valid JSON (at character {place[0] if place else 0})"
        elif not place:  # the body is no JSON object (or was sent as a form)
            message = ('body: expected a JSON object such as {"inputs": ["a text"]}, sent with '
                       "Content-Type: application/json")
        else:
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in place).lstrip(".")
            given = f" (got {json.dumps(first['input'])[:60]})" if "input" in first and kind != "missing" else ""
            message = f"{where}: {first.get('msg', 'invalid')}{given}"
        return JSONResponse({"error": message}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(DlkitError)
    async def bad_input(_: Request, err: DlkitError) -> JSONResponse:
        message = " ".join(str(err).split())
        return JSONResponse({"error": message if isinstance(err, InputError) else f"inputs: {message}"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def failed(_: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": f"the model failed: {type(err).__name__}: {err}"}, status_code=500)
