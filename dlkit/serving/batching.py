"""Dynamic batching: the inputs of requests that arrive together go through the model in one call.

A request waits in a queue. The batcher takes the requests waiting once they hold `max_batch_size` inputs or the
first of them has waited `timeout` seconds, whichever comes first, and runs the model once on all of them in its
own thread, so that the event loop keeps taking requests meanwhile (the next batch fills while
the model runs). Requests with different options (top_k, beam_size) go through the model in separate calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dlkit.errors import DlkitError

# the model call: a batch of inputs and the options -> one answer per input
Predict = Callable[[list[Any], dict[str, Any]], list[Any]]


class InputError(DlkitError):
    """An input of a request that the model cannot take, named by its position in the request."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"inputs[{index}]: {message}")


@dataclass
class Request:
    """One request's inputs and options, and the future its answer is set on."""

    inputs: list[Any]
    options: dict[str, Any]
    answer: asyncio.Future = field(repr=False)
    arrived: float = 0.0  # the event loop's clock


@dataclass
class Counters:
    """What the batcher has done since the server started (`GET /info`)."""

    requests: int = 0
    inputs: int = 0
    model_calls: int = 0
    largest_batch: int = 0


class Batcher:
    """Gathers requests into batches of at most `max_batch_size` inputs and runs `predict` on each batch."""

    def __init__(self, predict: Predict, max_batch_size: int, timeout: float,
                 input_errors: tuple[type[Exception], ...] = ()) -> None:
        """`input_errors`: what `predict` raises when an input is at fault (the request is answered with an InputError
        naming that input); anything else it raises is the model's failure."""
        self.predict, self.max_batch_size, self.timeout = predict, max_batch_size, timeout
        self.input_errors = input_errors
        self.counters = Counters()
        self._waiting: deque[Request] = deque()  # in the order they came
        self._waiting_inputs = 0
        self._arrived = asyncio.Event()  # set when a request comes
        self._full = asyncio.Event()  # set when the requests waiting fill a batch
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlkit-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop batching (the server stops it once it has answered, or after its drain time given up on, every
        request); requests still waiting are answered with an error."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._waiting:
            self._answer(self._waiting.popleft(), error=DlkitError("the server stopped before this request's turn"))
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    async def submit(self, inputs: list[Any], options: dict[str, Any]) -> list[Any]:
        """One answer per input (what `predict` gave for it), once the batch holding them has been through the
        model."""
        loop = asyncio.get_running_loop()
        request = Request(inputs, options, loop.create_future(), loop.time())
        self.counters.requests += 1
        self.counters.inputs += len(inputs)
        self._waiting.append(request)
        self._waiting_inputs += len(inputs)
        self._arrived.set()
        if self._waiting_inputs >= self.max_batch_size:
            self._full.set()
        return await request.answer

    async def _serve(self) -> None:
        while True:
            batch = await self._gather()
            groups: dict[tuple, list[Request]] = {}
            for request in batch:
                groups.setdefault(tuple(sorted(request.options.items())), []).append(request)
            for requests in groups.values():
                try:
                    await self._run(requests)
                except Exception as err:  # noqa: BLE001 - whatever went wrong, the requests get an answer and
                    for request in requests:  # the batcher goes on
                        self._answer(request, error=err)

    async def _gather(self) -> list[Request]:
        """The next batch: the requests waiting, once they fill a batch or `timeout` after the first came; a
        request that would overfill the batch waits for the next one."""
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        left = self._waiting[0].arrived + self.timeout - asyncio.get_running_loop().time()
        if self._waiting_inputs < self.max_batch_size and left > 0:
            self._full.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._full.wait(), left)
        batch = [self._waiting.popleft()]
        size = len(batch[0].inputs)
        while self._waiting and size + len(self._waiting[0].inputs) <= self.max_batch_size:
            batch.append(self._waiting.popleft())
            size += len(batch[-1].inputs)
        self._waiting_inputs -= size
        return batch

    async def _run(self, requests: list[Request]) -> None:
        """One model call for the requests (same options). If it fails, each request is run alone, so that only the
        request at fault gets the error (an input's fault names the input)."""
        inputs = [item for request in requests for item in request.inputs]
        try:
            answers = await self._call(inputs, requests[0].options)
        except Exception as err:  # noqa: BLE001 - answered as the request's error, below
            if len(requests) > 1:
                for request in requests:
                    await self._run([request])
            else:
                failed = await self._name_bad_input(requests[0], err) if isinstance(err, self.input_errors) else err
                self._answer(requests[0], error=failed)
            return
        start = 0
        for request in requests:
            self._answer(request, answers[start:start + len(request.inputs)])
            start += len(request.inputs)

    async def _call(self, inputs: list[Any], options: dict[str, Any]) -> list[Any]:
        self.counters.model_calls += 1
        self.counters.largest_batch = max(self.counters.largest_batch, len(inputs))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model_thread, self.predict, inputs, options)

    async def _name_bad_input(self, request: Request, err: Exception) -> Exception:
        """The error of the first input that fails alone, as an InputError naming it (err when none does)."""
        if len(request.inputs) == 1:
            return InputError(0, str(err))
        for index, item in enumerate(request.inputs):
            try:
                await self._call([item], request.options)
            except self.input_errors as alone:
                return InputError(index, str(alone))
            except Exception as other:  # noqa: BLE001 - the model's failure, not an input's
                return other
        return err

    @staticmethod
    def _answer(request: Request, answers: list[Any] | None = None,
                error: BaseException | None = None) -> None:
        if request.answer.done():  # the client went away and its handler was cancelled
            return
        if error is not None:
            request.answer.set_exception(error)
        else:
            request.answer.set_result(answers)
