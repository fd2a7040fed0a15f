#!/usr/bin/env python
"""Train a shapediff model from Hydra configs.

    python scripts/train.py experiment=quickstart
    python scripts/train.py experiment=quickstart model=pvcnn_small trainer.max_steps=500 name=pvcnn_try
    torchrun --nproc_per_node=4 scripts/train.py experiment=...      # multi-GPU (DDP)
    python scripts/train.py experiment=quickstart trainer.cpu_processes=2   # 2 data-parallel CPU processes
    python scripts/train.py experiment=quickstart finetune=default data=mesh_folder data.root=my_shapes \
        trainer.init_from=runs/quickstart/checkpoints/last trainer.refit_normalization=true   # fine-tune (docs/finetuning.md)

Writes into run_dir (runs/<name>): checkpoints/, samples/*.ply, meshes/*.obj, samples.pt,
metrics.json, preview.png, train_log.jsonl, tb/ (TensorBoard).

Exit status (shapediff.cli): 0 done; 1 training diverged, or it finished but an end-of-run output (samples,
a mesh, metrics.json, preview.png) could not be made (named on stderr; the checkpoints and every other output
are written); 2 a config or file error (an unknown key, a key left at '???' such as data.root, a missing data
folder, a full disk, trainer.init_from weights that do not fit the configured model), Hydra's own included.
Before anything is built it checks what the run needs (shapediff.preflight): data roots, a writable
run_dir, Open3D where the data needs it (virtual partial scans, mesh TSDFs). Fallbacks used where Open3D
cannot be imported (e.g. meshes) are printed at the end.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from shapediff.cli import RUNTIME_FAILURE, USER_ERROR
from shapediff._optional import fallbacks_used
from shapediff.preflight import check_training_config
from shapediff.training.distributed import is_main_process
from shapediff.training.experiment import check_required, required_values_message, run_training
from shapediff.training.local_launch import launch_local, planned_processes
from shapediff.training.trainer import TrainingDiverged

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
_started = False  # whether Hydra composed the config and called main (see the __main__ block)


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    global _started
    _started = True
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not is_main_process():  # rank 0 logs for the run; the others only warnings and errors (into the same files)
        logging.getLogger().setLevel(logging.WARNING)
    try:
        check_required(cfg)
        check_training_config(OmegaConf.to_container(cfg, resolve=True))
        processes = planned_processes(cfg)
        if processes > 1 and _one_run():  # trainer.cpu_processes: this process launches the ranks and waits
            command = [sys.executable, str(Path(sys.argv[0]).resolve()), *sys.argv[1:]]
            code = launch_local(command, processes, cfg.trainer.num_threads)
            if code:
                sys.exit(code)
            return
        summary = run_training(cfg)
    except TrainingDiverged as err:  # the config was fine; the run failed (shapediff.cli: exit statuses)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(RUNTIME_FAILURE)
    except MissingMandatoryValue as err:  # a '???' read later on (run_training names those of cfg up front)
        print(f"error: {required_values_message([err.full_key or str(err)])}", file=sys.stderr)
        sys.exit(USER_ERROR)
    except (ValueError, OSError) as err:  # bad config or files; OSError also e.g. disk full on a checkpoint write
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR)
    if fallbacks_used():
        summary["fallbacks"] = fallbacks_used()
    if not is_main_process():  # rank 0 reports for the run (torchrun, trainer.cpu_processes)
        return
    print(json.dumps(summary, indent=2, default=str))
    for feature, used in fallbacks_used().items():
        print(f"fallback: {feature}: {used}", file=sys.stderr)
    if summary.get("output_errors"):
        for name, message in summary["output_errors"].items():
            print(f"error: {name} not written: {message}", file=sys.stderr)
        print(f"error: training finished (checkpoint {summary.get('checkpoint')}), but {len(summary['output_errors'])} "
              "end-of-run output(s) could not be made; the others are written", file=sys.stderr)
        sys.exit(RUNTIME_FAILURE)


def _one_run() -> bool:
    """Whether Hydra runs one job (a sweep's jobs each train in one process: relaunching argv would rerun the
    sweep)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        logging.getLogger("shapediff.training").warning(
            "trainer.cpu_processes: a --multirun sweep trains each job in one process")
        return False
    return True


if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:
        # Hydra reports its own errors (an unknown override, a missing config group) and exits 1 before
        # main runs: those are user errors too.
        if done.code == 1 and not _started:
            sys.exit(USER_ERROR)
        raise
