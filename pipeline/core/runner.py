"""What every stage shares: validated params, one-line errors, output ownership, resumable work units,
torchrun process groups.

* :func:`stage` makes a click command that validates ``--params`` when it starts and hands the stage
  a :class:`~pipeline.core.params.ParamsView` of exactly the keys it declares (its DVC ``params:``); a
  :class:`~pipeline.core.errors.PipelineError` anywhere becomes ``error: <one line>`` and exit status 2;
  ``--timing FILE`` records where the stage's wall time went (:mod:`pipeline.core.timing`); numpy/scipy's
  BLAS runs one thread (:func:`one_blas_thread`: torch owns the cores).
* :func:`claim_dir` creates an output folder or reuses one this project made; it never removes a
  folder it did not create.
* :func:`run_units` runs work units in this process and a pool beside it, one thread each, with a
  progress bar, keeps every finished unit's result in a state folder beside the output
  (:class:`Resume`), and skips finished units when an interrupted run is started again.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from pipeline.core import timing
from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_write, write_json
from pipeline.core.params import ParamsView, load_params

STAMP = ".selfment"  # marks a folder this project created; holds the fingerprint of its content
DONE = ".selfment-done"  # the fingerprint whose results the folder holds in full


def fingerprint(*parts: Any) -> str:
    """sha256 of JSON-serialised parts (typed params are dumped field by field)."""
    def plain(x):
        return x.model_dump(mode="json") if isinstance(x, BaseModel) else str(x)

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=plain).encode()).hexdigest()


def file_digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Commands


def _declared(reads, options: dict) -> frozenset[str]:
    return frozenset(reads(options) if callable(reads) else (r.format(**options) for r in reads))


def stage(name: str, reads: Sequence[str] | Callable[[dict], Iterable[str]] = ()):
    """Decorator: a click command ``name`` whose function gets ``(params_view, **options)``.

    ``reads`` lists the params keys the stage depends on (format strings over its options, e.g.
    ``"data.eval.{name}"``, or a function of the options); tests hold it equal to dvc.yaml. The
    params file is validated before anything else runs."""

    def decorate(fn):
        @functools.wraps(fn)
        def command(params_path: Path, timing_path: Path | None, **options):
            startup = timing.process_age()
            one_blas_thread()
            try:
                result = fn(ParamsView(load_params(params_path), _declared(reads, options)), **options)
            except PipelineError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            except OSError as exc:  # any writer: maps, masks, state, metrics
                if exc.errno != errno.ENOSPC:
                    raise
                where = Path(exc.filename or ".")
                free = shutil.disk_usage(next(p for p in [where, *where.parents] if p.exists())).free
                click.echo(f"error: disk full writing {where} ({free / 1e9:.2f} GB free); free space and run "
                           f"again: finished work is kept", err=True)
                sys.exit(2)
            if timing_path is not None and int(os.environ.get("RANK", 0)) == 0:
                write_json(timing_path, {"wall_s": round(timing.process_age(), 3), "startup_s": round(startup, 3),
                                         **timing.sections()})
            return result

        command.__click_params__ = list(getattr(fn, "__click_params__", []))
        cmd = click.option("--params", "params_path", default="params.yaml", show_default=True,
                           type=click.Path(dir_okay=False, path_type=Path), help="Parameters file.")(command)
        cmd = click.option("--timing", "timing_path", type=click.Path(dir_okay=False, path_type=Path),
                           help="Write the stage's wall time (start-up, sections) here as JSON.")(cmd)
        cmd = click.command(name)(cmd)
        cmd.reads = reads
        return cmd

    return decorate


def declared_reads(command: click.Command, args: list[str]) -> set[str]:
    """The params keys ``command`` declares when invoked with ``args`` (without running it)."""
    ctx = command.make_context(command.name, list(args), resilient_parsing=True)
    return set(_declared(command.reads, {k: v for k, v in ctx.params.items() if k != "params_path"}))


class Dist:
    """torchrun environment (RANK, WORLD_SIZE); a single process when launched without torchrun."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        if self.world_size > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------
# Outputs


def check_out_dir(path: Path | str, allow: frozenset[str] = frozenset()) -> Path:
    """Raise unless ``path`` is absent, a folder this project made, or a folder holding nothing but
    entries named in ``allow`` (cheap; run it before any long work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PipelineError(f"{path}: exists and is not a folder; choose another output path")
    if path.is_dir() and not (path / STAMP).is_file() and {p.name for p in path.iterdir()} - allow:
        raise PipelineError(f"{path}: folder exists and was not made by selfment; nothing was changed "
                            f"(move it away or choose another output path)")
    return path


def claim_dir(path: Path | str, key: str | None = None) -> Path:
    """An output folder this project owns: created, adopted when empty, kept when stamped by this project.
    With ``key`` it holds results made with that key only: a folder stamped with another key is emptied
    (the project made all of it). Any other existing folder is refused (:func:`check_out_dir`), so
    nothing of the user's is ever removed or mixed in."""
    path = check_out_dir(path)
    stamp = path / STAMP
    if key is not None and stamp.is_file() and stamp.read_text() != key:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file() or key is not None:
        stamp.write_text(key or "")
    return path


def finished(path: Path | str, key: str) -> bool:
    """Whether the folder holds the complete results of ``key`` (:func:`finish`; :func:`claim_dir` with
    another key empties it)."""
    done = Path(path) / DONE
    return done.is_file() and done.read_text() == key


def finish(path: Path | str, key: str) -> None:
    """Mark a claimed folder complete for ``key``: a rerun with the same inputs has nothing to do."""
    (Path(path) / DONE).write_text(key)


class Resume:
    """Finished work units of one output, kept beside it in ``.<name>.partial/<key>/`` until the stage
    ends. A different key (other params, other inputs, other units) starts afresh. The state of a run
    still going (another process writing into the same output with other inputs) is left alone: each
    run holds a lock on its key while it lives, and only unlocked state is stale."""

    def __init__(self, output: Path | str, key: str, owner: bool = True, siblings: Iterable[str] = ()):
        """``owner``: this process clears stale state and may write (``False``: another rank reads it);
        ``siblings``: the keys of the other ranks of the same run, whose state is never stale."""
        output = Path(output)
        self.root = output.parent / f".{output.name}.partial"
        self.dir = self.root / key[:16]
        if not owner:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if _try_lock(self.root / f"{key[:16]}.lock") is None:
            raise PipelineError(f"{output}: another run with the same inputs is writing it now; wait for it to end")
        self.dir.mkdir(exist_ok=True)  # only once locked: an unlocked state folder is always stale
        keep = {self.dir.name, *(k[:16] for k in siblings)}
        for stale in self.root.iterdir():  # state of another configuration, whose run has ended
            if stale.is_dir() and stale.name not in keep and _try_lock(self.root / f"{stale.name}.lock"):
                shutil.rmtree(stale, ignore_errors=True)
                (self.root / f"{stale.name}.lock").unlink(missing_ok=True)
                _unlock(self.root / f"{stale.name}.lock")

    def path(self, uid: str) -> Path:
        return self.dir / f"{uid}.pkl"

    def done(self, uid: str) -> bool:
        return self.path(uid).is_file()

    def save(self, uid: str, result: Any) -> None:
        atomic_write(self.path(uid), lambda f: pickle.dump(result, f))

    def load(self, uid: str) -> Any:
        return pickle.loads(self.path(uid).read_bytes())

    def close(self) -> None:
        """Forget this run's state once the stage's own output is written (another run's stays)."""
        shutil.rmtree(self.dir)
        (self.root / f"{self.dir.name}.lock").unlink(missing_ok=True)
        _unlock(self.root / f"{self.dir.name}.lock")
        try:
            self.root.rmdir()
        except OSError:  # another run's state is still there
            pass


_HELD: dict[str, Any] = {}  # locks this process holds: a run of it that stopped (an exception) is over


def _try_lock(path: Path):
    """An open file holding an exclusive lock on ``path`` (this process's own, if it holds it already), or
    None when another process holds it."""
    if str(path) in _HELD:
        return _HELD[str(path)]
    while True:
        f = open(path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        try:  # the holder we waited on may have removed the file: then lock the one at the path now
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    _HELD[str(path)] = f
    return f


def _unlock(path: Path) -> None:
    f = _HELD.pop(str(path), None)
    if f is not None:
        f.close()


@dataclass(frozen=True)
class Unit:
    uid: str           # stable name: the resume key of this unit
    args: tuple        # arguments of the work call
    size: int = 1      # items (images) it covers, for the progress bar


class Work:
    """A picklable work function: ``open()`` runs once per process (load a store, a model), then
    ``__call__(*unit.args)`` once per unit."""

    def open(self) -> None:
        pass

    def __call__(self, *args):
        raise NotImplementedError


_WORK: Work | None = None


def one_blas_thread() -> None:
    """numpy/scipy's BLAS at one thread in this process: torch owns the cores. OpenBLAS threads
    busy-wait after each call, so its pool beside torch's (or beside another process's) halves the
    speed of both; the bipartition stages ran 2.6x slower with two pools (docs/benchmarks.md "Benchmarks")."""
    threadpool_limits(1, user_api="blas")


def torch_threads(n: int) -> int:
    """Set torch's intra-op threads to ``n``; returns the previous number."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return old


def _start(work: Work, threads: int) -> None:
    global _WORK
    torch_threads(threads)
    threadpool_limits(threads)  # BLAS and OpenMP pools alike: a worker is one of several processes
    work.open()
    _WORK = work


def _call(args: tuple):
    return _WORK(*args)


def run_units(work: Work, units: Sequence[Unit], resume: Resume, *, workers: int = 1, desc: str = "",
              unit: str = "img", keep: bool = True) -> list | None:
    """Results of ``work`` on every unit, in order. Finished units (from an interrupted run) are loaded
    from ``resume``; the others run in ``workers`` processes of one thread each: this one, which takes
    units from the back of the list at once, and ``workers - 1`` spawned ones, which take them from the
    front once they have imported what they need (~1.6 s each). Each result is saved as soon as it is
    done; ``keep=False`` returns None instead of loading them all."""
    total = sum(u.size for u in units)
    # one process: the units are read as they come (a lazy sequence of millions costs nothing); a pool: listed
    todo = [u for u in units if not resume.done(u.uid)] if workers > 1 else None
    initial = sum(u.size for u in units if resume.done(u.uid)) if todo is None else total - sum(u.size for u in todo)
    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit)

    def save(u: Unit, result) -> None:
        resume.save(u.uid, result)
        bar.update(u.size)

    try:
        if todo is None or len(todo) == 1:
            opened = False
            for u in todo or units:
                if not resume.done(u.uid):
                    if not opened:  # loaded only when there is work
                        work.open()
                        opened = True
                    save(u, work(*u.args))
        elif todo:
            pool = ProcessPoolExecutor(max_workers=min(workers - 1, len(todo) - 1), initializer=_start,
                                       initargs=(work, 1), mp_context=multiprocessing.get_context("spawn"))
            threads, limits = torch_threads(1), threadpool_limits(1)  # this process: one of the workers
            try:
                jobs = {pool.submit(_call, u.args): u for u in todo}
                work.open()
                for job, u in reversed(list(jobs.items())):
                    if not job.cancel():  # the pool has started it: it has every unit before it too
                        break
                    del jobs[job]
                    save(u, work(*u.args))
                    for done in [j for j in jobs if j.done()]:
                        save(jobs.pop(done), done.result())
                for job in as_completed(jobs):
                    save(jobs[job], job.result())
            finally:  # on an error, drop the queued units instead of computing them first
                pool.shutdown(wait=True, cancel_futures=True)
                torch_threads(threads)
                limits.restore_original_limits()
    finally:
        bar.close()
    return [resume.load(u.uid) for u in units] if keep else None


def run_shared(work: Work, units: Sequence[Unit], output: Path | str, key: str, dist: Dist, *, workers: int = 1,
               desc: str = "") -> tuple[Callable[[], Iterator] | None, Callable[[], None]]:
    """:func:`run_units` across torchrun ranks (one or many nodes; a single process without torchrun): rank r
    takes units r, r + world, ... into its own resume state beside ``output`` (keyed by ``key``, its rank and
    the world size, so a killed rank resumes its own units); after a barrier rank 0 gets a function that
    yields every unit's result in order, loading one at a time (the other ranks get None). Call the returned
    ``close`` once rank 0 has written what it gathers: it waits for rank 0 and forgets this rank's state. The
    state folder must be on a file system every node sees (docs/params.md "Several machines")."""
    keys = [fingerprint(key, r, dist.world_size) for r in range(dist.world_size)]
    state = Resume(output, keys[dist.rank], siblings=keys)
    run_units(work, units[dist.rank::dist.world_size], state, workers=workers, desc=desc, keep=False)
    dist.barrier()
    gather = None
    if dist.rank == 0:
        states = [state] + [Resume(output, k, owner=False) for k in keys[1:]]

        def gather() -> Iterator:
            return (states[k % dist.world_size].load(u.uid) for k, u in enumerate(units))

    def close() -> None:
        dist.barrier()
        state.close()

    return gather, close


def chunked(indices: Sequence[int], size: int) -> list[Unit]:
    """Units of ``size`` consecutive indices each, named by their first and last index."""
    return [Unit(f"{c[0]:06d}-{c[-1]:06d}", (list(c),), len(c))
            for c in (indices[s:s + size] for s in range(0, len(indices), size))]
