"""CPU threads for workers that share a machine's cores, and rank groups: one trial trained
by k processes at once through torch.distributed (nccl on GPUs, gloo on the CPU).

A rank group's rank 0 is the worker the driver talks to (a worker process, or a Ray actor);
it starts ranks 1..k-1, its followers, each with one GPU of the group. For each job rank 0
sends (key, params, fidelity) to every follower over a pipe (a pipe waits for the next job
as long as it takes, where a collective would time out while rank 0 scores), then every rank
trains its share of each batch (the fine-tuning objective's training loop, given a process
group), and rank 0 alone scores, saves and answers the driver. A follower calls the
objective's ``follow(params, fidelity)``; an objective without one runs on rank 0 alone.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import socket
import sys
import threading
import traceback
from datetime import timedelta
from typing import Any, Callable

from llmhpo.errors import TrialFailed
from llmhpo.executors.base import Outcome

#: the CPU threads the executor gives a worker; the fine-tuning objective reads it when
#: [train] threads is 0
THREADS_ENV = "LLMHPO_THREADS"
#: rank 0's exit status when a follower was lost mid-trial (killed: the job is worth rerunning)
RANK_LOST = 75
#: rank 0's exit status when a follower's trial raised (its reason went to the driver already)
RANK_FAILED = 76
# a follower that has not finished its share this long after rank 0 finished the trial is
# taken to be stuck in a collective that rank 0 never joined (rank 0 failed before training)
_ACK_TIMEOUT = 60.0


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a Slurm or cgroup share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def split_threads(processes: int, cores: int | None = None) -> int:
    """Threads for each of ``processes`` CPU processes that share ``cores`` (default: the
    usable cores), so that they do not oversubscribe the machine; at most ``OMP_NUM_THREADS``
    where the environment sets it (as torch's own default honours it: a shared node's, or a
    test runner's, limit)."""
    share = max(1, (usable_cores() if cores is None else cores) // max(1, processes))
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(limit)) if limit.isdigit() and int(limit) > 0 else share


def use_threads(n: int | None) -> None:
    """This process, and what it starts later, computes on ``n`` CPU threads (torch's pool,
    OpenMP, MKL); None leaves the defaults."""
    if n is None:
        return
    for var in (THREADS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, size: int, port: int, device: str | None) -> None:
    """Join the group's torch.distributed process group as ``rank``."""
    import torch.distributed as dist

    dist.init_process_group("nccl" if device is not None else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=size, timeout=timedelta(minutes=30))


def _follower_main(conn: mpc.Connection, factory: Callable[[], Any], rank: int, size: int, port: int,
                   device: str | None, threads: int | None, env: dict[str, str]) -> None:
    """A follower rank: train its share of each job rank 0 sends, until told to stop (None)
    or rank 0 goes."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: end with rank 0
    except Exception:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(env)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    use_threads(threads)
    _join(rank, size, port, device)
    objective = None
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            break
        _, params, fidelity = job
        try:
            if objective is None:
                objective = factory()
            follow = getattr(objective, "follow", None)
            if follow is not None:
                follow(params, fidelity)
            conn.send("ok")
        except TrialFailed as e:  # every rank fails the same trial the same way (a diverged loss)
            conn.send(f"failed: {e}")
        except BaseException as e:  # the group is out of step (rank 0 may wait in a collective): end
            traceback.print_exc()
            sys.stderr.flush()
            last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            where = f" ({os.path.basename(last.filename)}:{last.lineno} in {last.name})" if last else ""
            try:
                conn.send(f"error: rank {rank}: {type(e).__name__}: {e}{where}")
            finally:
                os._exit(1)
    import torch.distributed as dist

    dist.destroy_process_group()


class RankGroup:
    """Rank 0's side of a rank group: its followers, their pipes, and the process group.
    devices: one per rank, rank 0's first (None each: ranks on the CPU, with gloo); rank 0's
    own CUDA_VISIBLE_DEVICES is set by the caller. method: how followers start ("fork" from
    a clean worker that has not imported torch yet, else "spawn", as inside a Ray actor).
    on_failure(key, reason): called before rank 0 ends because a follower's trial raised (the
    worker process sends the job's failed Outcome from it); without it rank 0 just ends."""

    def __init__(self, factory: Callable[[], Any], devices: list[str | None], threads: int | None,
                 method: str = "fork", on_failure: Callable[[Any, str], None] | None = None):
        self.size = len(devices)
        self._factory, self._devices, self._threads, self._method = factory, devices, threads, method
        self._on_failure = on_failure
        self._followers: list[Any] = []
        self._conns: list[mpc.Connection] = []
        self._closing = False
        self._key: Any = None  # the job rank 0 runs now
        self._running = False  # rank 0 is inside its job (the watchdog acts only then)
        self._lock = threading.Lock()  # one reader of the followers' pipes at a time

    def _start(self) -> None:
        """Start the followers and join the process group (once every rank has joined)."""
        self._closing = False
        port = _free_port()
        # fork only from a process that has not imported torch (no CUDA context, no thread pool)
        fork_ok = self._method == "fork" and "fork" in mp.get_all_start_methods() and "torch" not in sys.modules
        ctx = mp.get_context("fork" if fork_ok else "spawn")
        for rank in range(1, self.size):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_follower_main, name=f"llmhpo-rank-{rank}",
                            args=(child, self._factory, rank, self.size, port, self._devices[rank], self._threads,
                                  dict(os.environ)))
            p.start()
            child.close()
            self._followers.append(p)
            self._conns.append(parent)
        threading.Thread(target=self._watch, args=(list(self._followers), list(self._conns)),
                         name="llmhpo-ranks", daemon=True).start()
        _join(0, self.size, port, self._devices[0])

    def _watch(self, followers: list[Any], conns: list[mpc.Connection]) -> None:
        """A follower that ends mid-trial leaves rank 0 waiting in a collective for ever: end
        rank 0 too, with the follower's reason when it left one."""
        mpc.wait([p.sentinel for p in followers])
        if self._closing or not any(p in self._followers for p in followers):
            return
        with self._lock:
            if not self._running:  # between jobs, or rank 0 is reading the acks: run() sees it
                return
            for c in conns:
                try:
                    msg = c.recv() if c.poll(0) else None
                except (EOFError, OSError):
                    msg = None
                if isinstance(msg, str) and msg.startswith("error: "):
                    self._end(msg[len("error: "):])
            self._end(None)

    def _end(self, reason: str | None) -> None:
        """End rank 0: a follower's trial raised (``reason``: the job FAILs with it), or a
        follower was lost (None: the driver reruns the job)."""
        sys.stderr.write(f"llmhpo: a follower rank of this worker's rank group ended ({reason or 'lost'}); "
                         "the worker ends too\n")
        sys.stderr.flush()
        if reason is not None and self._on_failure is not None:
            try:
                self._on_failure(self._key, reason)
            except Exception:
                pass
            os._exit(RANK_FAILED)
        os._exit(RANK_LOST)

    def run(self, objective: Callable[..., Any], key: Any, params: dict[str, Any] | None,
            fidelity: Any) -> tuple[Any, bool]:
        """Run one job over the group (started on the first): (rank 0's Outcome, whether the
        group can take another). ``params`` None (the base model's score) runs on rank 0 alone."""
        if any(not p.is_alive() for p in self._followers):  # one was lost between jobs
            self.close()
        if not self._followers:
            try:
                self._start()
            except Exception as e:
                self.close()
                return Outcome(key, None, {}, {}, f"the rank group of {self.size} processes could not start: "
                               f"{type(e).__name__}: {e}", {"host": socket.gethostname(), "pid": os.getpid()}), True
        if params is None:
            return objective(key, params, fidelity), True
        with self._lock:
            self._key, self._running = key, True
        for c in self._conns:
            c.send((key, params, fidelity))
        out = objective(key, params, fidelity)
        with self._lock:
            self._running = False
        healthy = True
        for c in self._conns:
            if not c.poll(_ACK_TIMEOUT):
                healthy = False  # stuck in a collective rank 0 never joined (it failed before training)
                continue
            with self._lock:
                try:
                    msg = c.recv()
                except (EOFError, OSError):  # ended: the watchdog ends rank 0
                    msg = None
            if not isinstance(msg, str) or msg.startswith("error: "):
                healthy = False
            if isinstance(msg, str) and msg.startswith("error: ") and getattr(out, "error", None):
                out.error += f"; {msg[len('error: '):]}"  # the follower's own reason too
        return out, healthy

    def close(self) -> None:
        """Stop the followers (asked, then killed) and leave the process group."""
        self._closing = True
        for c in self._conns:
            try:
                c.send(None)
            except (BrokenPipeError, OSError):
                pass
        for p in self._followers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for c in self._conns:
            c.close()
        self._followers, self._conns = [], []
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()
