"""The eager start of coroutines: synchronous when nothing waits, a task otherwise."""

from __future__ import annotations

import asyncio

import pytest

from phoenix_channels._eager import start


async def test_a_coroutine_that_never_waits_runs_synchronously() -> None:
    seen: list[str] = []

    async def work() -> None:
        seen.append("ran")

    assert start(work()) is None
    assert seen == ["ran"]


async def test_waiting_hands_over_to_a_task_that_resumes_in_place() -> None:
    seen: list[object] = []
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        seen.append("before")
        seen.append(await future)
        await asyncio.sleep(0)
        seen.append(await asyncio.sleep(0.001, "slept"))

    task = start(work())
    assert task is not None and seen == ["before"]
    future.set_result(7)
    await task
    assert seen == ["before", 7, "slept"]


async def test_exceptions_from_futures_reach_the_coroutine() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caught: list[BaseException] = []

    async def work() -> None:
        try:
            await future
        except KeyError as exc:
            caught.append(exc)

    task = start(work())
    future.set_exception(KeyError("x"))
    assert task is not None
    await task
    assert isinstance(caught[0], KeyError)


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(True)

    task = start(work())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_a_task_nobody_holds_runs_to_its_end_and_its_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import gc

    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    future: asyncio.Future[None] = loop.create_future()

    async def work() -> None:
        await future
        raise RuntimeError("failed after waiting")

    try:
        start(work())  # the caller drops the task
        gc.collect()
        future.set_result(None)
        async with asyncio.timeout(5):
            while not unhandled and not caplog.records:
                gc.collect()
                await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(previous)
    assert unhandled == []
    assert "failed after waiting" in caplog.records[0].getMessage()


async def test_context_variables_set_by_the_coroutine_stay_in_its_own_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def work() -> None:
        var.set("inner")  # as asgiref's sync_to_async does before it waits
        await future
        seen.append(var.get())

    task = start(work())
    assert var.get() == "outer"  # nothing leaked into the caller's context
    assert task is not None
    future.set_result(None)
    await task
    assert seen == ["inner"]  # and the coroutine kept its own value across the wait
