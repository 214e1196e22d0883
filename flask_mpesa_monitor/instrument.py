"""Decorators that time and classify M-Pesa calls, database calls and MCP tools.

They work on plain and ``async`` functions, keep the wrapped function's name and
docstring (``functools.wraps``) and re-raise every exception unchanged: monitoring
observes, it never changes what the app sees. The organization comes from an argument
named ``org_id`` or ``organization_id`` (or the one named with ``organization_arg=``).

Example::

    @monitor_mpesa_operation("stk_push")
    def stk_push(org_id: str, phone: str, amount: int) -> dict:
        return daraja.post("/mpesa/stkpush/v1/processrequest", ...).json()
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from . import daraja, metrics, tenancy
from .redact import get_logger

F = TypeVar("F", bound=Callable[..., Any])
log = get_logger(__name__)

ORGANIZATION_ARGS = ("org_id", "organization_id")


def _organization_locator(
    func: Callable[..., Any], name: str | None
) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """Build, once per decorated function, a cheap way to find the organization argument."""
    try:
        parameters = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        parameters = []
    names = (name,) if name else ORGANIZATION_ARGS
    for candidate in names:
        if candidate in parameters:
            index = parameters.index(candidate)

            def locate(
                args: tuple[Any, ...], kwargs: dict[str, Any], _name: str = candidate, _index: int = index
            ) -> Any:
                if _name in kwargs:
                    return kwargs[_name]
                return args[_index] if len(args) > _index else None

            return locate
    return lambda args, kwargs: next((kwargs[n] for n in names if n in kwargs), None)


def _outcome_of_result(result: Any, operation: str) -> str:
    if isinstance(result, Mapping):
        return daraja.classify(result, operation=operation)
    if hasattr(result, "status_code") and hasattr(result, "json"):
        return daraja.classify_response(result, operation)
    return daraja.SUCCESS


def _timed(
    func: F,
    on_result: Callable[[tuple[Any, ...], dict[str, Any], float, Any], None],
    on_error: Callable[[tuple[Any, ...], dict[str, Any], float, BaseException], None],
) -> F:
    """Wrap ``func`` (sync or async): time each call, report it, re-raise unchanged."""

    def report(callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # monitoring must never break the call it watches
            log.exception("could not record a call of %s", getattr(func, "__qualname__", func))

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                report(on_error, args, kwargs, time.perf_counter() - start, exc)
                raise
            report(on_result, args, kwargs, time.perf_counter() - start, result)
            return result

        return cast(F, async_wrapper)  # functools.wraps keeps func's signature

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            report(on_error, args, kwargs, time.perf_counter() - start, exc)
            raise
        report(on_result, args, kwargs, time.perf_counter() - start, result)
        return result

    return cast(F, wrapper)  # functools.wraps keeps func's signature


def monitor_mpesa_operation(operation: str, *, organization_arg: str | None = None) -> Callable[[F], F]:
    """Time a Daraja call and count it by outcome (see :mod:`flask_mpesa_monitor.daraja`).

    The wrapped function returns Daraja's JSON (a mapping) or a ``requests.Response``;
    exceptions (``requests.HTTPError``, ``Timeout``, ``ConnectionError``, ...) are
    classified and re-raised unchanged. ``token_refresh`` also counts
    ``mpesa_token_refreshes_total`` and sets the token expiry from ``expires_in``.
    """
    label = tenancy.operations(operation)
    is_token_refresh = operation == "token_refresh"

    def record(organization: Any, seconds: float, outcome: str, result: Any = None) -> None:
        org = tenancy.organizations(organization)
        metrics.api_calls_total.labels(label, org, outcome).inc()
        metrics.api_duration_seconds.labels(label, org).observe(seconds)
        if is_token_refresh:
            ok = outcome == daraja.SUCCESS
            metrics.token_refreshes_total.labels(org, "success" if ok else "failure").inc()
            expires_in = result.get("expires_in") if ok and isinstance(result, Mapping) else None
            if expires_in is not None:
                metrics.token_expiry_timestamp_seconds.labels(org).set(time.time() + float(expires_in))

    def decorate(func: F) -> F:
        locate = _organization_locator(func, organization_arg)
        return _timed(
            func,
            lambda args, kwargs, seconds, result: record(
                locate(args, kwargs), seconds, _outcome_of_result(result, operation), result),
            lambda args, kwargs, seconds, exc: record(
                locate(args, kwargs), seconds, daraja.classify_exception(exc, operation)),
        )

    return decorate


def monitor_database_operation(operation: str) -> Callable[[F], F]:
    """Observe ``mpesa_db_query_duration_seconds{operation}`` for each call (errors too)."""
    histogram = metrics.db_query_duration_seconds.labels(tenancy.db_operations(operation))

    def decorate(func: F) -> F:
        return _timed(
            func,
            lambda args, kwargs, seconds, result: histogram.observe(seconds),
            lambda args, kwargs, seconds, exc: histogram.observe(seconds),
        )

    return decorate


def _tool_outcome(result: Any) -> str:
    if isinstance(result, Mapping):
        if result.get("isError") is True:
            return daraja.SYSTEM_ERROR
        if any(key in result for key in ("errorCode", "ResultCode", "ResponseCode", "Body")):
            return daraja.classify(result)
    return daraja.SUCCESS


def monitor_mcp_tool(tool: str, *, organization_arg: str | None = None) -> Callable[[F], F]:
    """Count and time an MCP tool handler (``mpesa_mcp_tool_calls_total``/``_duration_seconds``).

    A result with ``isError: true`` (MCP's tool error) or a Daraja error body counts as
    that outcome; an exception is classified like a Daraja call and re-raised.
    """
    name = tenancy.tools(tool)
    histogram = metrics.mcp_tool_duration_seconds.labels(name)

    def decorate(func: F) -> F:
        locate = _organization_locator(func, organization_arg)

        def record(args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float, outcome: str) -> None:
            org = tenancy.organizations(locate(args, kwargs))
            metrics.mcp_tool_calls_total.labels(name, org, outcome).inc()
            histogram.observe(seconds)

        return _timed(
            func,
            lambda args, kwargs, seconds, result: record(args, kwargs, seconds, _tool_outcome(result)),
            lambda args, kwargs, seconds, exc: record(args, kwargs, seconds, daraja.classify_exception(exc)),
        )

    return decorate
