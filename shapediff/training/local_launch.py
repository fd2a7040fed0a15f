"""One training command as several data-parallel processes on this machine's CPUs (``trainer.cpu_processes``).

On a CPU, small 3D convolutions scale poorly over threads: the latent quickstart's training step on the
2-core machine took 0.73-0.88 (its 3D UNet) and 0.58-0.89 (its VAE) of the one-process, two-thread time
as two processes of one thread each (back to back; docs/install.md, "Several processes on the CPU"). The
trainer's global batch, its items, their noise and the latent pipeline's class-label dropout do not depend on the
number of processes (``Trainer._train_step``, per-example seeds), and a loss normalised by a total of the batch's data (the latent VAE's
weighted L1) divides by the whole batch's total (:mod:`shapediff.batch_split`): the latent quickstart's two stages
end within float rounding of one process (``tests/training/test_local_launch.py``). The point denoiser's guidance
dropout still draws from each rank's own generator: the same in distribution, not the same examples.

``scripts/train.py`` asks :func:`planned_processes` how many processes the composed config wants; above 1
it calls :func:`launch_local`, which starts that many copies of the same command as ranks of a gloo
process group (the environment torchrun sets, with a file rendezvous instead of a TCP port, so no port can
be taken in between) and waits for them. The parent keeps the run folder's lock meanwhile
(:mod:`shapediff.training.run_lock` lets its children share it). Rank 0 prints and writes as a one-process
run does; the other ranks' output is shown only if one of them fails first. When a rank fails, the others
are stopped and the command exits with the failing rank's status.

Not used where the trainer runs on a GPU (one process per GPU is torchrun's job, README) or under torchrun.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shapediff.threads import usable_cpus

log = logging.getLogger("shapediff.training")

STORE_ENV = "SHAPEDIFF_DIST_STORE"        # file rendezvous of the process group (setup_distributed)
LAUNCHER_ENV = "SHAPEDIFF_LAUNCHER_PID"   # the parent that holds the run folder's lock (run_lock)
EVAL_THREADS_ENV = "SHAPEDIFF_EVAL_THREADS"  # threads rank 0 may use once the others are done (evaluation)

__all__ = ["EVAL_THREADS_ENV", "LAUNCHER_ENV", "STORE_ENV", "evaluation_threads", "launch_local", "planned_processes"]


def _trainer_configs(cfg: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The trainer node of the run and of each stage (a stage's merges over the run's), by config key."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    from shapediff.training.experiment import stage_config, to_plain  # noqa: PLC0415

    found = {"trainer": to_plain(cfg["trainer"])}
    for name in (cfg.get("stages") or {}):
        found[f"stages.{name}.trainer"] = to_plain(OmegaConf.create(stage_config(cfg, name))["trainer"])
    return found


def planned_processes(cfg: Mapping[str, Any]) -> int:
    """How many local processes ``scripts/train.py`` should run ``cfg`` as: ``trainer.cpu_processes`` on a
    CPU run, capped at the CPUs this process may use; 1 on a GPU, under torchrun, or when set to 1.

    Raises ValueError naming the key when a stage asks for another count than the run (the process group
    spans every stage) or a batch does not split into equal shares (``batch_size`` % (processes x
    ``grad_accum``)).
    """
    from shapediff.devices import resolve_device  # noqa: PLC0415
    from shapediff.training.trainer import TrainerConfig  # noqa: PLC0415

    trainers = {key: TrainerConfig.from_dict(dict(node)) for key, node in _trainer_configs(cfg).items()}
    wanted = trainers["trainer"].cpu_processes
    for key, trainer in trainers.items():
        if trainer.cpu_processes != wanted:
            raise ValueError(f"{key}.cpu_processes: every stage runs in the same {wanted} process(es) "
                             f"(trainer.cpu_processes); a stage cannot set its own, got {trainer.cpu_processes}")
    if wanted == 1 or "WORLD_SIZE" in os.environ:
        return 1
    device = resolve_device(trainers["trainer"].device)
    if device.type != "cpu":
        log.info("trainer.cpu_processes=%d applies to CPU training; the device is %s: one process (torchrun "
                 "runs one per GPU)", wanted, device)
        return 1
    cpus = usable_cpus()
    if wanted > cpus:
        log.warning("trainer.cpu_processes=%d, but this process may use %d CPU(s): %d process(es)", wanted, cpus, cpus)
        wanted = cpus
    for key, trainer in trainers.items():
        if wanted > 1 and trainer.batch_size % (wanted * trainer.grad_accum):
            raise ValueError(f"{key}.batch_size: {trainer.batch_size} does not split into {wanted} processes x "
                             f"grad_accum {trainer.grad_accum} (trainer.cpu_processes={wanted}); choose a batch "
                             f"size divisible by {wanted * trainer.grad_accum} or trainer.cpu_processes=1")
    return wanted


def _threads_per_process(num_threads: Any, processes: int) -> tuple[int | None, int]:
    """(OMP_NUM_THREADS for each rank or None to leave ``num_threads`` as given, threads in all)."""
    from shapediff.threads import auto_threads  # noqa: PLC0415

    if num_threads == "auto":
        total = auto_threads()
        return max(1, total // processes), total
    if num_threads in (None, "torch"):
        return None, auto_threads()
    return None, int(num_threads) * processes


def launch_local(command: Sequence[str], processes: int, num_threads: Any = "auto", *,
                 poll_s: float = 0.2) -> int:
    """Run ``command`` (argv, e.g. ``[sys.executable, "scripts/train.py", ...]``) as ``processes`` ranks of a
    gloo process group on this machine and return the exit status: 0 when every rank ends with 0, else the
    status of the first rank seen failing (the others are stopped). ``num_threads``: ``trainer.num_threads``;
    "auto" gives each rank an equal share of :func:`~shapediff.threads.auto_threads` (at least 1), a number
    is each rank's own.
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
        raise ValueError(f"processes: expected an int >= 2, got {processes!r}")
    per_rank, total = _threads_per_process(num_threads, processes)
    log.info("training as %d processes x %s thread(s) (trainer.cpu_processes)", processes,
             per_rank if per_rank is not None else num_threads)
    with tempfile.TemporaryDirectory(prefix="shapediff-launch-") as tmp:
        base = {**os.environ, "WORLD_SIZE": str(processes), STORE_ENV: str(Path(tmp) / "store"),
                LAUNCHER_ENV: str(os.getpid()), EVAL_THREADS_ENV: str(total)}
        if per_rank is not None:
            base["OMP_NUM_THREADS"] = str(per_rank)
        ranks: list[subprocess.Popen] = []
        logs: list[Any] = []
        previous = _stop_on_sigterm()
        try:
            for rank in range(processes):
                env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                if rank == 0:
                    ranks.append(subprocess.Popen(list(command), env=env, preexec_fn=_die_with_parent))
                else:
                    logs.append(open(Path(tmp) / f"rank{rank}.log", "w+b"))  # noqa: SIM115 (closed below)
                    ranks.append(subprocess.Popen(list(command), env=env, stdout=subprocess.DEVNULL, stderr=logs[-1],
                                                  preexec_fn=_die_with_parent))
            return _wait(ranks, logs, poll_s)
        except BaseException:
            _stop(ranks)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            for fh in logs:
                fh.close()


class _Terminated(KeyboardInterrupt):
    """SIGTERM to the launcher: unwinds like Ctrl-C, so its ranks are stopped first."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(f"signal {signum}")


def _stop_on_sigterm():
    """Turn SIGTERM into an exception while the ranks run (the default would leave them behind); returns the
    handler to restore, None where signals cannot be set (not the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:
        return None


def _die_with_parent() -> None:
    """In each rank, before it runs: ask Linux to send it SIGTERM when the launcher dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _wait(ranks: list[subprocess.Popen], logs: list[Any], poll_s: float) -> int:
    while True:
        codes = [proc.poll() for proc in ranks]
        failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            rank = failed[0]
            _stop(ranks)
            if rank:  # rank 0's own messages are already on the terminal
                logs[rank - 1].seek(0)
                tail = logs[rank - 1].read().decode(errors="replace")[-4000:]
                print(f"error: training rank {rank} of {len(ranks)} (trainer.cpu_processes) failed with exit status "
                      f"{codes[rank]}:\n{tail}", file=sys.stderr)
            code = codes[rank]
            return code if code > 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it
        if all(code == 0 for code in codes):
            return 0
        time.sleep(poll_s)


def _stop(ranks: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """Ask every rank still running to stop (SIGTERM), then kill what is left after ``grace_s``."""
    for proc in ranks:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in ranks:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def evaluation_threads(dist: Any):
    """Within: rank 0 of a ``trainer.cpu_processes`` run uses the threads of every rank (the others are done
    training and wait), e.g. for the end-of-run samples and metrics; elsewhere nothing changes."""
    total = os.environ.get(EVAL_THREADS_ENV)
    if not (total and dist.enabled and dist.is_main and dist.device.type == "cpu"):
        yield
        return
    import torch  # noqa: PLC0415

    before = torch.get_num_threads()
    torch.set_num_threads(max(before, int(total)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
