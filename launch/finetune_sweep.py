"""What pretraining buys: scratch vs linear probe vs full fine-tuning, across label budgets and seeds.

  python -m launch.finetune_sweep --pretrained runs/quickstart --root runs/finetune_sweep \
      [--budgets 8,32,128] [--modes scratch,linear_probe,full] [--seeds 3] \
      [--config configs/quickstart_finetune.py] [--config.a.b=value ...]

The grid is launch.sweep's (`--sweep data.labels_per_class=... --sweep init.mode=... --seeds N` with
`--config.init.workdir=PRETRAINED`): the same run names and workdirs, finished runs are skipped, unfinished
ones resume, and `python -m pretrain.report ROOT` reads it. The runs go in this process rather than one
process each, with compiled programs cached on disk (runs that differ only in their labeled subset compile
to the same program): on a CPU that is most of a few-second run's cost.

The seed chooses the labeled subset, the head's init and the batch order; the modes of one seed see the
same labeled examples. Writes ROOT/table.md: validation accuracy and label NLL (nats), mean ± std over
seeds, one row per budget.
"""
import os
import time

import numpy as np
from absl import flags

from launch import sweep as grid
from pretrain import cli
from pretrain.trainer import metrics

flags.DEFINE_string("pretrained", None, "Run directory of the pretrained model (e.g. configs/quickstart.py's).")
flags.DEFINE_list("budgets", ["8", "32", "128"], "Labeled examples per class (data.labels_per_class).")
flags.DEFINE_list("modes", ["scratch", "linear_probe", "full"], "init.mode values to compare.")
FLAGS = flags.FLAGS
# --config, --root and --seeds are launch.sweep's flags, with this experiment's defaults.
FLAGS.set_default("config", "configs/quickstart_finetune.py")
FLAGS.set_default("root", "runs/finetune_sweep")
FLAGS.set_default("seeds", 3)


def enable_compile_cache(directory: str) -> None:
  import jax
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def _final_val(workdir: str) -> dict:
  return [row for row in metrics.read(workdir) if row.get("split") == "val"][-1]


def run_grid(*, config_spec, pretrained, root, budgets, modes, seeds, overrides=()) -> dict:
  """Trains every (budget, mode, seed) not yet finished; returns {(mode, budget): [final val metrics]}."""
  from pretrain import finetune
  from pretrain.trainer import run_dir
  run_dir.saved_config(pretrained)  # A missing pretrained run stops the sweep before any run.
  run_dir.checkpoint_step(pretrained)
  runs = grid.expand(config_spec, [f"data.labels_per_class={','.join(map(str, budgets))}",
                                   f"init.mode={','.join(modes)}"], seeds=seeds, root=root,
                     fixed=[*overrides, ("init.workdir", pretrained)])
  enable_compile_cache(os.path.join(root, "jax_cache"))
  results = {}
  for i, run in enumerate(runs, 1):
    tick = time.perf_counter()
    if not grid.is_finished(run):
      finetune.train(run.config, run.workdir)
    final = _final_val(run.workdir)
    print(f"[{i}/{len(runs)}] {run.name}: accuracy {final['accuracy']:.4f}, NLL {final['loss']:.4f} "
          f"({time.perf_counter() - tick:.0f} s)", flush=True)
    key = (run.config.init.mode, run.config.data.labels_per_class)
    results.setdefault(key, []).append(final)
  return results


def _cell(values) -> str:
  values = np.asarray(values, dtype=np.float64)
  std = values.std(ddof=1) if len(values) > 1 else 0.0
  return f"{values.mean():.3f} ± {std:.3f}"


def table(results, budgets, modes) -> str:
  """Markdown: one row per budget; accuracy, then label NLL, per mode; mean ± sample std over seeds."""
  head = ["labels per class", *[f"{m} accuracy" for m in modes], *[f"{m} NLL" for m in modes]]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for b in budgets:
    cells = [_cell([r["accuracy"] for r in results[(m, b)]]) for m in modes]
    cells += [_cell([r["loss"] for r in results[(m, b)]]) for m in modes]
    lines.append("| " + " | ".join([str(b), *cells]) + " |")
  return "\n".join(lines) + "\n"


def run_and_report(*, config_spec, pretrained, root, budgets, modes, seeds, overrides=()) -> str:
  """Runs the grid, writes ROOT/table.md and returns its text."""
  os.makedirs(root, exist_ok=True)
  tick = time.perf_counter()
  results = run_grid(config_spec=config_spec, pretrained=pretrained, root=root, budgets=budgets, modes=modes,
                     seeds=seeds, overrides=overrides)
  text = table(results, budgets, modes)
  text += (f"\nValidation accuracy and label NLL (nats) of {config_spec} fine-tuned from {pretrained}, mean ± std "
           f"over seeds 0..{seeds - 1}; {len(budgets) * len(modes) * seeds} runs, "
           f"{metrics.format_duration(time.perf_counter() - tick)} wall.\n")
  with open(os.path.join(root, "table.md"), "w") as f:
    f.write(text)
  return text


def main(argv):
  del argv
  text = run_and_report(config_spec=FLAGS.config, pretrained=FLAGS.pretrained, root=FLAGS.root,
                        budgets=[int(b) for b in FLAGS.budgets], modes=FLAGS.modes, seeds=FLAGS.seeds,
                        overrides=cli.OVERRIDES)
  print("\n" + text)


if __name__ == "__main__":
  cli.run(main, required=("pretrained",))
