"""Dask cluster set-up for the runner: local threads or processes, an address, Slurm."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

__all__ = ["CONNECT_TIMEOUT_S", "check_scheduler", "dask_client", "slurm_cluster"]

log = logging.getLogger(__name__)

#: Seconds to reach a scheduler ``ADDRESS`` before the run is refused (distributed's
#: default is 30 s, and then a traceback).
CONNECT_TIMEOUT_S = 5.0
_NEEDS_JOBQUEUE = "scheduler 'slurm' needs dask-jobqueue: pip install 'hcsmito[slurm]'"


def check_scheduler(scheduler: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, in one line and before anything is written, a scheduler the run cannot use:
    ``slurm`` without ``sbatch`` on PATH or without dask-jobqueue, an ``ADDRESS`` where
    nothing accepts a connection within ``timeout`` seconds (a TCP connect, no Dask
    handshake: :func:`dask_client` then times out after as long)."""
    import shutil
    import socket
    from importlib.util import find_spec

    if scheduler in ("threads", "processes"):
        return
    if scheduler == "slurm":
        if shutil.which("sbatch") is None:
            raise ValueError(
                "scheduler 'slurm' needs sbatch, which is not on PATH: run on a Slurm login "
                "node, or choose --scheduler threads | processes | ADDRESS"
            )
        if find_spec("dask_jobqueue") is None:
            raise ValueError(_NEEDS_JOBQUEUE)
        return
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        protocol, loc = parse_address(scheduler)
        if protocol not in ("tcp", "tls"):
            return  # inproc, ucx...: nothing to dial here
        host, port = parse_host_port(loc, default_port=8786)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"--scheduler {scheduler!r}: not threads, processes, slurm or a scheduler address "
            f"such as tcp://HOST:8786 ({exc})"
        ) from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConnectionError(
            f"--scheduler {scheduler}: no scheduler answers at {host}:{port} ({why}, "
            f"{timeout:g} s at most): start it, or run with --scheduler threads"
        ) from None


def _dashboard_link(client, *, local: bool) -> str:
    """The dashboard's address; a local cluster's binds to 127.0.0.1, so link there."""
    if local:
        port = client.scheduler_info().get("services", {}).get("dashboard")
        if port:
            return f"http://127.0.0.1:{port}/status"
    return client.dashboard_link


def slurm_cluster(slurm):
    """A dask-jobqueue ``SLURMCluster`` from ``config.resources.slurm`` (no job submitted yet).

    ``cluster.job_script()`` shows the batch script each worker job runs. The scheduler and
    dashboard listen on the node's address so that the jobs can reach them.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ValueError(_NEEDS_JOBQUEUE) from None

    extra = list(slurm.job_extra_directives)
    if slurm.gpus:
        extra.append(f"--gres=gpu:{slurm.gpus}")
    return SLURMCluster(
        queue=slurm.queue,
        account=slurm.account,
        cores=slurm.cores,
        processes=slurm.processes,
        memory=slurm.memory,
        walltime=slurm.walltime,
        job_extra_directives=extra,
        local_directory=slurm.local_directory,
        scheduler_options={"dashboard_address": ":0"},
    )


@contextlib.contextmanager
def dask_client(
    scheduler: str, workers: int | None, backend: str | None, *, quiet: bool, slurm=None
) -> Iterator:
    """A distributed Client for ``threads | processes | ADDRESS | slurm``; a local cluster
    binds to 127.0.0.1. The cluster it started is closed on exit.

    Parameters
    ----------
    scheduler : {"threads", "processes", "slurm"} or str
        ``threads``: one in-process worker with ``workers`` threads; ``processes``: one
        process per worker (one per GPU through dask-cuda for ``backend="gpu"`` when it is
        installed); ``slurm``: :func:`slurm_cluster`; anything else: a scheduler address.
    workers : int, optional
        Default: the CPU count, at most 4.
    backend : str, optional
        ``gpu`` picks dask-cuda for ``processes``.
    quiet : bool
        Do not print the dashboard link.
    slurm : config.resources.slurm, optional
        Needed for ``slurm``.
    """
    from distributed import Client, LocalCluster

    n = workers or max(1, min(4, os.cpu_count() or 1))
    cluster = None
    if scheduler == "threads":
        cluster = LocalCluster(
            processes=False,
            n_workers=1,
            threads_per_worker=n,
            dashboard_address="127.0.0.1:0",  # in-process transport: no port but these
            worker_dashboard_address="127.0.0.1:0",  # (its default listens on 0.0.0.0)
        )
    elif scheduler == "processes":
        if backend == "gpu":
            try:
                from dask_cuda import LocalCUDACluster  # one worker per GPU

                cluster = LocalCUDACluster(host="127.0.0.1", dashboard_address="127.0.0.1:0")
            except ImportError:
                log.info("dask-cuda is not installed: one process per worker instead")
        if cluster is None:
            cluster = LocalCluster(
                processes=True,
                n_workers=n,
                threads_per_worker=1,
                dashboard_address="127.0.0.1:0",
                worker_dashboard_address="127.0.0.1:0",
                host="127.0.0.1",
            )
    elif scheduler == "slurm":
        cluster = slurm_cluster(slurm)
        cluster.scale(jobs=slurm.jobs)
    if cluster is not None:
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except OSError as exc:  # distributed: "Timed out trying to connect to ..."
            raise ConnectionError(f"--scheduler {scheduler}: {exc}") from None
    try:
        if not quiet:
            print(f"dask dashboard: {_dashboard_link(client, local=cluster is not None)}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
