"""Response senders: the one way an answer travels from a backend back to its transport.

A frontend binds a sender to each request before ``DataPlane.enqueue``; the
backend (on an instance's worker thread) and the core (for errors found before
scheduling) call it. The value is handed to the frontend's event loop with
``loop.call_soon_threadsafe``, so no thread waits for a response.

``send(None, final=True)`` is the "complete, no response" flag of a decoupled
model (Triton's ``TRITONSERVER_RESPONSE_COMPLETE_FINAL`` without a response).
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Optional


class ResponseSender:
    """Thread-safe; ``streaming`` says whether more than one response may be sent."""

    streaming = False

    def send(self, response: Any, *, final: bool) -> None:
        raise NotImplementedError

    def send_error(self, error: BaseException, *, final: bool = True) -> None:
        raise NotImplementedError


class FutureSender(ResponseSender):
    """Unary RPCs: ``future`` (of ``loop``) resolves to the one response or raises the error."""

    __slots__ = ("loop", "future", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.future = loop.create_future()
        # call_soon_threadsafe wakes the loop through its self-pipe; when the
        # answer comes from the loop's own thread (an error found before
        # scheduling) the future is set directly.
        self._thread = threading.get_ident()

    def send(self, response: Any, *, final: bool) -> None:
        if threading.get_ident() == self._thread:
            self._resolve(response, None)
        else:
            self.loop.call_soon_threadsafe(self._resolve, response, None)

    def send_error(self, error: BaseException, *, final: bool = True) -> None:
        if threading.get_ident() == self._thread:
            self._resolve(None, error)
        else:
            self.loop.call_soon_threadsafe(self._resolve, None, error)

    def _resolve(self, response: Any, error: Optional[BaseException]) -> None:
        future = self.future
        if future.done():  # cancelled by the transport, or a second answer
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(response)


class StreamSender(ResponseSender):
    """Streams: every ``send``/``send_error`` calls ``put((response_or_error, final, request))``
    on the loop; ``put`` keeps the stream's order and writes."""

    streaming = True
    __slots__ = ("loop", "put", "request", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, put: Callable[[tuple], None],
                 request: Any = None):
        self.loop = loop
        self.put = put
        self.request = request
        self._thread = threading.get_ident()

    def send(self, response: Any, *, final: bool) -> None:
        item = (response, final, self.request)
        if threading.get_ident() == self._thread:
            self.put(item)
        else:
            self.loop.call_soon_threadsafe(self.put, item)

    def send_error(self, error: BaseException, *, final: bool = True) -> None:
        item = (error, final, self.request)
        if threading.get_ident() == self._thread:
            self.put(item)
        else:
            self.loop.call_soon_threadsafe(self.put, item)


class BlockingSender(ResponseSender):
    """For callers without an event loop (in-process tools and tests): ``wait()`` blocks
    for the one response. Not used by the frontends."""

    __slots__ = ("_done", "_value", "_error")

    def __init__(self):
        self._done = threading.Event()
        self._value = self._error = None

    def send(self, response: Any, *, final: bool) -> None:
        if not self._done.is_set():
            self._value = response
            self._done.set()

    def send_error(self, error: BaseException, *, final: bool = True) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    def wait(self, timeout: Optional[float] = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError("no response")
        if self._error is not None:
            raise self._error
        return self._value
