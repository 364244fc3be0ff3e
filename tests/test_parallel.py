"""tcl.parallel: the quiet end of an interrupted pool."""

import os
import threading
from concurrent.futures import InvalidStateError

import tcl.parallel as parallel


def _dying_thread(error: BaseException, filename: str) -> threading.ExceptHookArgs:
    try:
        exec(compile("raise error", filename, "exec"), {"error": error})
    except BaseException as raised:
        return threading.ExceptHookArgs((type(raised), raised, raised.__traceback__, None))
    raise AssertionError("not raised")


def test_only_the_executors_cancelled_future_race_is_silenced(monkeypatch):
    """After Ctrl-C, CPython's pool manager thread may die with InvalidStateError in
    concurrent/futures/process.py; that traceback is hidden, any other reaches the hook."""
    seen = []
    monkeypatch.setattr(parallel, "_previous_thread_hook", lambda args: seen.append(args))
    executor = os.path.join("lib", "concurrent", "futures", "process.py")
    parallel._quiet_cancelled_future_race(_dying_thread(InvalidStateError("x"), executor))
    assert seen == []
    parallel._quiet_cancelled_future_race(_dying_thread(InvalidStateError("x"), "other.py"))
    parallel._quiet_cancelled_future_race(_dying_thread(ValueError("x"), executor))
    assert [args.exc_type for args in seen] == [InvalidStateError, ValueError]
