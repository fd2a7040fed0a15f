"""shapediff.evaluation: everything that scores or reports a model (models sample and complete; they write no reports).

- ``write_run_outputs(model, ref_dataset, run_dir, eval_cfg, train_dataset=None)``: the files a finished run
  writes, chosen by ``model.family`` (``RUN_OUTPUTS``); an output that cannot be made is reported in
  ``metrics["output_errors"]`` and the others are still written (``OutputLog``).
- generation: ``evaluate_generation`` (MMD / COV / 1-NNA), ``render_preview``.
- completion: ``evaluate_completion``, ``held_out_scans``, ``shape_bank``, ``save_completions``.
- baselines: ``baseline_partial``, ``baseline_mirror``, ``baseline_retrieval``.
- tables: ``completion_table``, ``generation_table``, ``summarise_seeds``.
- protocols (docs/protocols.md): ``evaluate(model_or_samples, refs, protocol=...)``, ``score_generation``,
  ``score_completion``, the presets ``GENERATION_PROTOCOLS`` / ``COMPLETION_PROTOCOLS`` (``get_protocol``), and
  ``load_samples_and_refs`` for sample sets written by PointFlow, PVD, LION or DPM.
"""

from shapediff.evaluation.baselines import baseline_mirror, baseline_partial, baseline_retrieval
from shapediff.evaluation.completion import (evaluate_completion, held_out_scans, save_completions, shape_bank,
                                             write_completion_outputs)
from shapediff.evaluation.generation import evaluate_generation, render_preview, write_generation_outputs
from shapediff.evaluation.latent import write_autoencoder_outputs, write_latent_outputs
from shapediff.evaluation.protocol_runs import evaluate
from shapediff.evaluation.protocols import (COMPLETION_PROTOCOLS, GENERATION_PROTOCOLS, CompletionProtocol,
                                            GenerationProtocol, get_protocol, score_completion, score_generation)
from shapediff.evaluation.released import load_cloud_file, load_samples_and_refs
from shapediff.evaluation.reporting import OutputLog
from shapediff.evaluation.run_outputs import RUN_OUTPUTS, write_run_outputs
from shapediff.evaluation.tables import completion_table, generation_table, summarise_seeds

__all__ = ["COMPLETION_PROTOCOLS", "CompletionProtocol", "GENERATION_PROTOCOLS", "GenerationProtocol", "OutputLog",
           "RUN_OUTPUTS", "evaluate", "get_protocol", "load_cloud_file", "load_samples_and_refs", "score_completion",
           "score_generation", "baseline_mirror", "baseline_partial", "baseline_retrieval", "completion_table",
           "evaluate_completion", "evaluate_generation", "generation_table", "held_out_scans", "render_preview",
           "save_completions", "shape_bank", "summarise_seeds", "write_autoencoder_outputs", "write_completion_outputs",
           "write_generation_outputs", "write_latent_outputs", "write_run_outputs"]
