"""The one place where daemon errors become gRPC statuses.

`NbdError.code` maps to the gRPC status code of the same name and its message becomes the status
details; its `reason` travels in the trailing metadata `nbd-reason`. Any other exception is a bug:
its traceback goes to the log and the client gets INTERNAL with a short message that names the log
file, never the exception's text (which may carry a token or a signed URL).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import grpc
import grpc.aio

from nbd.errors import Code, NbdError

__all__ = ["ErrorInterceptor", "REASON_METADATA", "status_code"]

log = logging.getLogger(__name__)

REASON_METADATA = "nbd-reason"


def status_code(code: Code) -> grpc.StatusCode:
    return grpc.StatusCode[code.name]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, log_file: Path) -> None:
        self._log_file = log_file

    async def _abort(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str, error: Exception
    ) -> NoReturn:
        if isinstance(error, NbdError):
            log.info("%s: %s (%s)", method, error.message, error.reason)
            await context.abort(
                status_code(error.code), error.message, trailing_metadata=((REASON_METADATA, error.reason),)
            )
        log.error("%s failed", method, exc_info=error)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error in the nbd daemon ({type(error).__name__}); its log {self._log_file} has the details",
            trailing_metadata=((REASON_METADATA, "Internal"),),
        )
        raise AssertionError("unreachable")  # context.abort always raises

    def _wrap_unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as e:
                await self._abort(context, method, e)

        return unary

    def _wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                try:
                    async for item in behavior(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as e:
                    await self._abort(context, method, e)

            return stream
        # A handler that writes with context.write() and returns (e.g. health's Watch).
        return self._wrap_unary(method, behavior)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._wrap_unary(method, handler.unary_unary))  # type: ignore[attr-defined,no-any-return]
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._wrap_stream(method, handler.unary_stream))  # type: ignore[attr-defined,no-any-return]
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._wrap_unary(method, handler.stream_unary))  # type: ignore[attr-defined,no-any-return]
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._wrap_stream(method, handler.stream_stream))  # type: ignore[attr-defined,no-any-return]
        return handler
