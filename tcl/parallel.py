"""An ordered parallel map over patients, in worker processes that never outlive their parent."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, InvalidStateError, ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from tcl.utils import TclError, available_cpus

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers(n_items: int, workers: int | None = None) -> int:
    """Worker processes to use: ``workers`` if given, else one per CPU, never more than items."""
    wanted = available_cpus() if workers is None else workers
    if wanted < 1:
        raise TclError(f"--workers must be >= 1 (got {workers})")
    return max(1, min(wanted, n_items))


def _watch_parent(parent: int, stop: Any) -> None:
    """Exit this worker as soon as its parent is gone (the worker is then re-parented) or the
    parent sets ``stop`` (a multiprocessing Event: it no longer wants the results).

    A worker blocked on the task queue never learns that a SIGKILLed parent (out-of-memory
    killer, container stop) has died: it shares the queue's pipe with its siblings, so it never
    sees end-of-file, and it would wait for ever as an orphan holding memory.
    """
    while os.getppid() == parent:
        if stop.wait(0.2):
            break
    os._exit(1)


def _init_worker(parent: int, stop: Any) -> None:
    """Run in each pool worker before its first task."""
    # Ctrl-C goes to the whole process group: the parent alone reacts (it stops the pool and
    # prints one line), the workers would each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the parent's Python-level SIGTERM handler (preprocess installs
    # one to clean up); a worker terminated by the pool must simply stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True).start()


def _quiet_cancelled_future_race(args: threading.ExceptHookArgs) -> None:
    """Hide one known race of CPython's ProcessPoolExecutor (3.11): when an interrupted run
    cancels its futures and its workers exit, the executor's manager thread may still try to
    mark a cancelled future as failed and dies with InvalidStateError, printing a traceback
    after the one-line message of an interrupt. Nothing is lost: the run is already over.
    Every other exception of any thread goes to the previous hook."""
    frames = traceback.extract_tb(args.exc_traceback) if args.exc_traceback else []
    if isinstance(args.exc_value, InvalidStateError) and any(
        frame.filename.endswith(os.path.join("concurrent", "futures", "process.py"))
        for frame in frames
    ):
        return
    _previous_thread_hook(args)


_previous_thread_hook = threading.excepthook


def map_patients(
    func: Callable[[Item], Result],
    items: Iterable[Item],
    workers: int = 1,
    progress: bool = False,
    desc: str = "patients",
    total: int | None = None,
) -> Iterator[Result]:
    """Yield ``func(item)`` for each item, **in input order**, using ``workers`` processes.

    At most ``2 × workers`` results are in flight, so memory stays bounded however many
    patients there are. Results do not depend on ``workers`` (each call is independent).
    Workers are forked where the platform allows: spawned workers would re-import the caller's
    main module, which breaks scripts without an ``if __name__ == "__main__"`` guard. ``func``
    uses only numpy and nibabel, so threads that the parent holds (torch) do not matter.

    Workers ignore Ctrl-C (the parent handles it) and exit by themselves within a fraction of a
    second when the parent dies, however it dies. When the consumer stops early (an error, an
    interrupt, ``close()``), queued items are cancelled and the workers exit at once, dropping
    the item in hand.
    """
    items = list(items)
    bar = tqdm(total=total or len(items), desc=desc, unit="patient", disable=not progress)
    try:
        if workers <= 1:
            for item in items:
                yield func(item)
                bar.update(1)
            return
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        stop = context.Event()
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(os.getpid(), stop),
        )
        finished = False
        pending: list[Future] = []
        try:
            iterator = iter(items)
            for item in iterator:
                pending.append(pool.submit(func, item))
                if len(pending) >= 2 * workers:
                    yield pending.pop(0).result()
                    bar.update(1)
            while pending:
                yield pending.pop(0).result()
                bar.update(1)
            finished = True
        finally:
            for future in pending:
                future.cancel()
            if not finished:
                threading.excepthook = _quiet_cancelled_future_race
                stop.set()  # workers drop the patient in hand and exit
            pool.shutdown(wait=finished, cancel_futures=True)
    finally:
        bar.close()
