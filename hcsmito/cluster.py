"""Dask cluster set-up for the runner: local threads or processes, an address, Slurm;
how many fields a cluster's memory holds at once; and running the fields' tasks on it."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

__all__ = [
    "CONNECT_TIMEOUT_S",
    "PEAK_FIXED_BYTES",
    "PEAK_NUCLEI_BYTES",
    "PEAK_WORKING_BYTES",
    "FieldSlots",
    "check_scheduler",
    "dask_client",
    "field_peak_bytes",
    "fields_at_once",
    "plan_fields",
    "run_fields",
    "slurm_cluster",
    "with_peak_bytes",
]

log = logging.getLogger(__name__)

#: Seconds to reach a scheduler ``ADDRESS`` before the run is refused (distributed's
#: default is 30 s, and then a traceback).
CONNECT_TIMEOUT_S = 5.0
_NEEDS_JOBQUEUE = "scheduler 'slurm' needs dask-jobqueue: pip install 'hcsmito[slurm]'"

#: Host bytes a field holds at its peak per field voxel (``z·y·x``), besides its stored
#: channels (each counted at its dtype's size): the stages' working arrays and the label
#: images. Measured by ``benchmarks/bench_field.py`` (benchmarks/RESULTS.md, "TNT stage
#: memory and speed, exact"): one 3 x 40 x 1024^2 uint16 field, default config, CPU,
#: peaked at 40.2 B of RSS per field voxel (1.57 GiB; the process' ~0.3 GB of libraries
#: included), 6 of them the stored channels; the TNT stage's growing pieces and the label
#: images' int32 copies for output hold the most. This is the other 34 with a 15 % margin.
#: Deconvolution and background subtraction hold a float32 copy of each channel they
#: process and their own working arrays on top (set ``resources.memory_per_field`` for
#: them). On a GPU the host holds less.
PEAK_WORKING_BYTES = 40

#: Host bytes a field holds beyond its per-voxel share, whatever its size (per-plane and
#: per-object buffers, tables): a 16 x 256^2 field with five channels peaks at ~60 MB over
#: it (tracemalloc), which is most of what a small field holds.
PEAK_FIXED_BYTES = 64 * 2**20


#: Host bytes per field voxel added when the field has a nuclei channel: the nuclei stage
#: peaks at ~69 B per field voxel above its start (tracemalloc: a 24 x 512^2 field with five
#: uint16 channels peaked at 82.6 B per field voxel of arrays, 10 of them the stored
#: channels, against ~51 for three channels), with a 15 % margin.
PEAK_NUCLEI_BYTES = 28


def field_peak_bytes(
    shape: Sequence[int], dtype, axes: str = "czyx", *, nuclei: bool = False
) -> int:
    """A field's expected peak host memory while it is processed, in bytes: its field
    voxels (``z·y·x``) times :data:`PEAK_WORKING_BYTES` (and :data:`PEAK_NUCLEI_BYTES`
    with a ``nuclei`` channel) plus its channels' stored bytes (``c·z·y·x`` times the
    dtype's size), plus :data:`PEAK_FIXED_BYTES`.

    A 3 x 40 x 1024^2 uint16 field: 64 MiB + 40 * 1024^2 * (40 + 3 * 2) = 1.86 GiB
    (measured: 1.57 GiB); 3 x 40 x 2048^2: 7.25 GiB. Channels no role reads are counted too
    (on the safe side); a time axis is not (one time point is read).
    """
    import numpy as np

    if len(shape) != len(axes):
        raise ValueError(f"shape {tuple(shape)} does not match axes {axes!r}")
    field = math.prod(n for n, ax in zip(shape, axes, strict=True) if ax in "zyx")
    channels = math.prod(n for n, ax in zip(shape, axes, strict=True) if ax == "c")
    working = PEAK_WORKING_BYTES + (PEAK_NUCLEI_BYTES if nuclei else 0)
    stored = channels * np.dtype(dtype).itemsize
    return PEAK_FIXED_BYTES + int(math.ceil(field * (working + stored)))


def fields_at_once(slots: int, peak: int | None, memory: int | None) -> int:
    """Fields that run at once: ``slots`` (threads or workers), fewer when ``slots`` fields
    at ``peak`` bytes each need more than ``memory``; at least 1 (a field that does not fit
    alone is refused by :meth:`hcsmito.io.field.FieldImage.check_memory`)."""
    if not peak or not memory:
        return slots
    return max(1, min(slots, memory // peak))


@dataclass(frozen=True)
class FieldSlots:
    """How the runner bounds the fields in flight (:func:`plan_fields`)."""

    workers: int | None
    """Workers (processes) or threads to start a local cluster with; None: not local."""
    at_once: int | None
    """Fields submitted at a time across the cluster; None: no bound known."""
    memory: int | None
    """Bytes one field may take (a worker's memory); None: unknown."""
    resources: dict[str, float] | None = None
    """Dask resources each field asks for (workers that declare ``memory``)."""


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _largest_fitting(peaks: Sequence[int], memory: int | None) -> int | None:
    """The largest peak that fits in ``memory``: fields over it are refused, not waited for."""
    if not peaks:
        return None
    fit = [p for p in peaks if memory is None or p <= memory]
    return max(fit or peaks)


def plan_fields(
    scheduler: str,
    workers: int | None,
    peaks: Sequence[int],
    *,
    source: str = "estimated from its shape",
    client=None,
    slurm=None,
) -> FieldSlots:
    """How many fields run at once so that they fit in memory, and says so in one log line
    (warning) when that is fewer than the threads or workers.

    Parameters
    ----------
    scheduler : str
        ``threads | processes``: the machine's available memory is shared by ``workers``
        fields; ``slurm``: each worker has ``slurm.memory / slurm.processes``; an address:
        each worker's Dask ``memory`` resource if every worker declares one (Dask then runs
        only the fields that fit), else its ``memory_limit`` (a bound on the fields in flight).
    workers : int, optional
        Threads or processes asked for (default: the CPU count, at most 4).
    peaks : sequence of int
        Each field's expected peak in bytes (:func:`field_peak_bytes`, or
        ``resources.memory_per_field``).
    source : str
        Where the peak comes from, for the log line.
    client : distributed.Client, optional
        Needed for a scheduler address (its workers are asked).
    slurm : config.resources.slurm, optional
        Needed for ``slurm``.
    """
    n = workers or max(1, min(4, os.cpu_count() or 1))
    if scheduler in ("threads", "processes"):
        memory = _available_memory()
        peak = _largest_fitting(peaks, memory)
        k = fields_at_once(n, peak, memory)
        _say(peak, source, f"{_fmt(memory)} is available", k, n)
        return FieldSlots(workers=k, at_once=k, memory=memory)
    if scheduler == "slurm":
        from dask.utils import parse_bytes

        memory = parse_bytes(slurm.memory) // slurm.processes
        threads = max(1, slurm.cores // slurm.processes)
        peak = _largest_fitting(peaks, memory)
        k = fields_at_once(threads, peak, memory)
        _say(peak, source, f"a worker has {_fmt(memory)}", k, threads, " per worker")
        return FieldSlots(workers=None, at_once=k * slurm.processes * slurm.jobs, memory=memory)
    info = list(client.scheduler_info(n_workers=-1).get("workers", {}).values())
    if not info:
        return FieldSlots(workers=None, at_once=None, memory=None)
    declared = [w.get("resources", {}).get("memory") for w in info]
    if all(declared):
        memory = int(max(declared))
        peak = _largest_fitting(peaks, memory)
        threads = sum(w.get("nthreads", 1) for w in info)
        k = sum(
            fields_at_once(w.get("nthreads", 1), peak, m)
            for w, m in zip(info, declared, strict=True)
        )
        _say(peak, source, f"the workers declare {_fmt(sum(declared))}", k, threads)
        return FieldSlots(None, None, memory, resources={"memory": peak} if peak else None)
    limits = [w.get("memory_limit") or None for w in info]
    memory = max(limits) if all(limits) else None
    peak = _largest_fitting(peaks, memory)
    threads = sum(w.get("nthreads", 1) for w in info)
    k = sum(
        fields_at_once(w.get("nthreads", 1), peak, m) for w, m in zip(info, limits, strict=True)
    )
    if all(limits):
        _say(peak, source, f"the workers' memory limits add up to {_fmt(sum(limits))}", k, threads)
    return FieldSlots(workers=None, at_once=k, memory=memory)


def _say(peak, source, memory_text: str, k: int, n: int, per: str = "") -> None:
    if peak and k < n:
        log.warning(
            "memory: a field is expected to peak at %s (%s) and %s: %d field%s at a time%s "
            "instead of %d (resources.memory_per_field sets the peak)",
            _fmt(peak),
            source,
            memory_text,
            k,
            "" if k == 1 else "s",
            per,
            n,
        )


def _fmt(n: float) -> str:
    from dask.utils import format_bytes

    return format_bytes(int(n))


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
            cluster = _local_process_cluster(n)
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


def _local_process_cluster(n: int):
    """A LocalCluster of ``n`` single-threaded worker processes that keep glibc's adaptive
    mmap threshold.

    Dask's nannies set ``MALLOC_TRIM_THRESHOLD_`` in their workers (and in the process that
    starts them), which also pins glibc's mmap threshold at 128 KiB: every array a stage
    makes and frees is then mapped and unmapped again, its pages faulted in and zeroed
    each time (one field in such a worker: 8.9 s of CPU, 2.9 of them in the kernel,
    against 5.4 s in the driver's process). The workers start with glibc's default, as
    the threads scheduler runs.
    """
    import dask
    from distributed import LocalCluster

    saved = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # a nanny's earlier setting
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            return LocalCluster(
                processes=True,
                n_workers=n,
                threads_per_worker=1,
                dashboard_address="127.0.0.1:0",
                worker_dashboard_address="127.0.0.1:0",
                host="127.0.0.1",
            )
    finally:
        if saved is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = saved


def with_peak_bytes(plate, task, memory_per_field: int | None):
    """The task (a :class:`hcsmito.runner.FieldTask`) with its field's expected peak
    (``peak_bytes``): ``resources.memory_per_field``, or estimated from the field's shape,
    dtype and whether the config finds a nuclei channel in it (its metadata; nothing is
    read)."""
    if memory_per_field is None:
        from hcsmito.config import Config

        img = plate.read_field(task.well_path, task.field)
        channels = dict(Config.model_validate(task.config).channels)
        nuclei = img.resolve_roles(channels).get("nuclei") is not None
        peak = field_peak_bytes(img.data.shape, img.data.dtype, "".join(img.axes), nuclei=nuclei)
    else:
        peak = memory_per_field
    return replace(task, peak_bytes=peak)


def run_fields(todo, run_one, scheduler, workers, backend, progress, resources) -> None:
    """Run the fields' tasks (:class:`hcsmito.runner.FieldTask`) on the cluster, each by
    ``run_one`` (:func:`hcsmito.runner.run_field`, which returns its ledger entry), no more
    at once than memory holds (:func:`plan_fields`): a local cluster starts with fewer
    threads or workers; on another, fields ask for the workers' ``memory`` resource, or no
    more are in flight than the workers' memory limits hold."""
    from distributed import as_completed

    quiet = not progress
    slurm = resources.slurm
    source = (
        "resources.memory_per_field"
        if resources.memory_per_field is not None
        else "estimated from its shape"
    )
    peaks = [t.peak_bytes for t in todo if t.peak_bytes is not None]
    slots = None
    if scheduler in ("threads", "processes"):
        slots = plan_fields(scheduler, workers, peaks, source=source)
        workers = slots.workers
    with dask_client(scheduler, workers, backend, quiet=quiet, slurm=slurm) as client:
        if slots is None:
            slots = plan_fields(
                scheduler, workers, peaks, source=source, client=client, slurm=slurm
            )
        todo = [replace(t, memory_budget=slots.memory) for t in todo]
        waiting = iter(todo)

        def submit(t):
            fits = slots.resources and (t.peak_bytes or 0) <= (slots.memory or 0)
            # one that cannot fit is refused at once by its worker, not left waiting
            res = slots.resources if fits else None
            return client.submit(run_one, t, key=t.name, pure=False, resources=res)

        first = [submit(t) for t in itertools.islice(waiting, slots.at_once or len(todo))]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="field", desc="fields")
        try:
            done = as_completed(first)
            for fut in done:
                entry = fut.result()
                nxt = next(waiting, None)
                if nxt is not None:  # one out, the next in
                    done.add(submit(nxt))
                if bar is not None:
                    bar.update(1)
                    if entry.get("status") != "ok":
                        bar.write(
                            f"failed: {entry['well']} field {entry['field']}: {entry['error']}"
                        )
        finally:
            if bar is not None:
                bar.close()
