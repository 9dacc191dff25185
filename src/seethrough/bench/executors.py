"""Executors: where benchmark units run. Local (in-process, the default) or Ray.

Only the driver writes the ledger: executors return each unit's outcome to the driver as it
finishes. Every unit runs with one torch thread, so a unit computes the same numbers wherever it
runs (thread count changes floating-point reduction order, and training amplifies that).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Outcome", "execute_unit", "LocalExecutor", "RayExecutor", "ray_map"]


@dataclass(frozen=True)
class Outcome:
    """What running one unit gave: metrics (``None`` on error), the error text, the seconds it took."""

    index: int
    metrics: dict[str, float] | None
    error: str | None
    seconds: float


def execute_unit(index: int, game_name: str, method: str, case: Mapping[str, Any]) -> Outcome:
    """Run one (game, method, case) unit; never raises for the unit's own failure."""
    from .games import GAMES

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        metrics = GAMES[game_name].play(method, case)
        return Outcome(index, {k: float(v) for k, v in metrics.items()}, None, time.perf_counter() - start)
    except Exception as err:  # a unit that raises is recorded as an error and retried next run
        tb = traceback.format_exception(type(err), err, err.__traceback__, limit=-3)
        return Outcome(index, None, f"{type(err).__name__}: {err}\n{''.join(tb)}", time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


Task = tuple[int, str, str, Mapping[str, Any]]


class LocalExecutor:
    """Runs units one after another in this process."""

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        for task in tasks:
            yield execute_unit(*task)


class RayExecutor:
    """Runs units as Ray tasks (``ray.init()`` locally, or at ``address``); outcomes stream back as they finish."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        with _ray_session(self.address, self.num_cpus) as ray:
            remote = ray.remote(num_cpus=1)(execute_unit)
            pending = [remote.remote(*task) for task in tasks]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])


@contextmanager
def _ray_session(address: str | None, num_cpus: int | None) -> Iterator[Any]:
    """The ``ray`` module, initialised (locally, or at ``address``) unless it already was; shut down after if we started it."""
    try:
        import ray
    except ImportError as err:
        from ..core.errors import LoadError

        raise LoadError("the ray executor needs the 'ray' extra: pip install 'seethrough[ray]'.") from err
    started_here = not ray.is_initialized()
    if started_here:
        if address is not None:
            _check_reachable(address, CONNECT_TIMEOUT_S)
        env = {k: v for k, v in os.environ.items() if k.startswith(("SEETHROUGH_", "HF_", "OMP_"))}
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env}, configure_logging=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


#: How long to wait for a Ray cluster's head to accept a connection (ray.init itself retries forever).
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str, timeout: float) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) address that accepts no TCP connection within ``timeout`` s.

    Raises:
        LoadError: nothing listens there (or the host is unreachable); other forms ("auto") pass.
    """
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        from ..core.errors import LoadError

        raise LoadError(f"cannot reach the Ray cluster at {address!r} within {timeout:g} s ({err.strerror or err}); "
                        "start it (ray start --head) or fix --ray-address.") from None


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def ray_map(fn: Callable[[Any], Any], items: Iterable[Any], *, address: str | None = None,
            num_cpus: int | None = None) -> list[Any]:
    """``list(map(fn, items))`` with each call a Ray task: the ray executor for a sharded dataset pass.

    A ``mapper`` for `seethrough.core.sharded_pass` (and ``top_exemplars(..., mapper=ray_map)``):
    ``fn`` and the items are pickled to the workers and the results come back in order. Ray is
    started as the ray executor starts it (locally, or at ``address``) unless it already runs.

    Raises:
        LoadError: Ray is not installed.
    """
    with _ray_session(address, num_cpus) as ray:
        remote = ray.remote(num_cpus=1)(_apply)
        return list(ray.get([remote.remote(fn, item) for item in items]))
