"""What pretraining buys: scratch vs linear probe vs full fine-tuning, across label budgets and seeds.

  python -m launch.finetune_sweep --pretrained runs/quickstart --root runs/finetune_sweep \
      [--pretrain_config configs/NAME.py[:VARIANT]] [--budgets 8,32,128,all] [--modes scratch,linear_probe,full] \
      [--seeds 3] [--config configs/quickstart_finetune.py] [--config.a.b=value ...]

With --pretrain_config the pretrained run is trained first into --pretrained (resumed when unfinished, skipped
when finished), so one command goes from unlabeled text to the table. The grid is launch.sweep's (`--sweep
data.labels_per_class=... --sweep init.mode=... --seeds N` with `--config.init.workdir=PRETRAINED`): the same run
names and workdirs, finished runs are skipped, unfinished ones resume, and `python -m pretrain.report ROOT` reads
it. The runs go in this process rather than one process each, with compiled programs cached on disk (runs that
differ only in their labeled subset compile to the same program): on a CPU that is most of a short run's cost.

The seed chooses the labeled subset, the head's init and the batch order; the modes of one seed see the
same labeled examples. A budget of "all" keeps every labeled example (data.labels_per_class=0). Writes
ROOT/table.md (validation accuracy, macro-F1 where the runs report it, and label NLL in nats, mean ± std over
seeds, one row per budget; then the fewest labels with which each pretrained mode matches scratch on all labels)
and ROOT/transfer.png (accuracy and macro-F1 against labels per class, log scale).
"""
import os
import time

import numpy as np
from absl import flags

from launch import sweep as grid
from pretrain import cli
from pretrain.trainer import metrics

flags.DEFINE_string("pretrained", None, "Run directory of the pretrained model (e.g. configs/quickstart.py's).")
flags.DEFINE_string("pretrain_config", None, "Config that trains --pretrained first (skipped once it has finished).")
flags.DEFINE_list("budgets", ["8", "32", "128"], "Labeled examples per class (data.labels_per_class); 'all' keeps all.")
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


def pretrain(config_spec: str, workdir: str) -> None:
  """Trains the pretrained run unless it has finished (an unfinished one resumes)."""
  from pretrain import configlib
  from pretrain.trainer import ledger, train
  record = ledger.read(workdir) or {}
  if record.get("status") == "finished":
    print(f"pretrained run {workdir} has finished; using it", flush=True)
    return
  tick = time.perf_counter()
  train.train(configlib.load(config_spec), workdir)
  print(f"pretrained {workdir} ({metrics.format_duration(time.perf_counter() - tick)})", flush=True)


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
    f1 = f", macro-F1 {final['macro_f1']:.4f}" if "macro_f1" in final else ""
    print(f"[{i}/{len(runs)}] {run.name}: accuracy {final['accuracy']:.4f}{f1}, NLL {final['loss']:.4f} "
          f"({time.perf_counter() - tick:.0f} s)", flush=True)
    key = (run.config.init.mode, run.config.data.labels_per_class)
    results.setdefault(key, []).append(final)
  return results


def _cell(values) -> str:
  values = np.asarray(values, dtype=np.float64)
  std = values.std(ddof=1) if len(values) > 1 else 0.0
  return f"{values.mean():.3f} ± {std:.3f}"


def _budget(b: int) -> str:
  return "all" if b == 0 else str(b)


def _metrics(results) -> list[tuple[str, str]]:
  """(key, title) of the final-row metrics the table shows: accuracy, macro-F1 where reported, label NLL."""
  rows = [r for runs in results.values() for r in runs]
  shown = [("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("loss", "NLL")]
  return [(k, title) for k, title in shown if all(k in r for r in rows)]


def table(results, budgets, modes) -> str:
  """Markdown: one row per budget; accuracy, macro-F1 (where reported), then label NLL, per mode; mean ± sample
  std over seeds."""
  shown = _metrics(results)
  head = ["labels per class", *[f"{m} {title}" for _, title in shown for m in modes]]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for b in budgets:
    cells = [_cell([r[key] for r in results[(m, b)]]) for key, _ in shown for m in modes]
    lines.append("| " + " | ".join([_budget(b), *cells]) + " |")
  return "\n".join(lines) + "\n"


def matches_scratch(results, budgets, modes, all_labels: int, num_classes: int, key: str = "accuracy") -> list[str]:
  """ULMFiT's headline, per pretrained mode: the fewest labels per class whose mean `key` reaches scratch's on
  all labels, and how many times fewer labels that is."""
  if 0 not in budgets or "scratch" not in modes:
    return []
  reference = float(np.mean([r[key] for r in results[("scratch", 0)]]))
  lines = []
  for mode in (m for m in modes if m != "scratch"):
    reached = [b for b in sorted(b for b in budgets if b) if np.mean([r[key] for r in results[(mode, b)]]) >= reference]
    if reached:
      b = reached[0]
      lines.append(f"- {mode}: {b} labels per class ({b * num_classes:,} labels) match scratch's {key} on all "
                   f"{all_labels:,} labels ({reference:.3f}): {all_labels / (b * num_classes):.0f}x fewer labels.")
    else:
      lines.append(f"- {mode}: no budget below all labels reaches scratch's {key} on all {all_labels:,} labels "
                   f"({reference:.3f}).")
  return lines


def plot(results, budgets, modes, all_per_class: float, path: str) -> None:
  """Accuracy and macro-F1 (where reported) against labels per class on a log axis, mean ± std over seeds;
  "all" sits at the labeled pool's mean per class."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  shown = [(k, t) for k, t in _metrics(results) if k != "loss"]
  fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), squeeze=False)
  xs = [b if b else all_per_class for b in budgets]
  for ax, (key, title) in zip(axes[0], shown):
    for i, mode in enumerate(modes):
      values = [np.asarray([r[key] for r in results[(mode, b)]], np.float64) for b in budgets]
      ax.errorbar(xs, [v.mean() for v in values], yerr=[v.std(ddof=1) if len(v) > 1 else 0.0 for v in values],
                  color=f"C{i}", marker="o", ms=4, capsize=3, label=mode)
    ax.set_xscale("log")
    ax.set_xticks(xs, [_budget(b) for b in budgets])
    ax.set(xlabel="labels per class", ylabel=f"validation {title}", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _labeled_pool(config_spec, pretrained, overrides) -> tuple[int, int]:
  """(labeled training examples, classes) of the fine-tuning data with every label kept."""
  from pretrain import configlib, data
  config = configlib.load(config_spec, [*overrides, ("data.labels_per_class", "0"), ("init.workdir", pretrained)])
  dataset = data.load(config)
  return len(dataset.train), dataset.num_classes


def run_and_report(*, config_spec, pretrained, root, budgets, modes, seeds, overrides=()) -> str:
  """Runs the grid, writes ROOT/table.md (and ROOT/transfer.png) and returns the table's text."""
  os.makedirs(root, exist_ok=True)
  tick = time.perf_counter()
  results = run_grid(config_spec=config_spec, pretrained=pretrained, root=root, budgets=budgets, modes=modes,
                     seeds=seeds, overrides=overrides)
  text = table(results, budgets, modes)
  shown = ", ".join(title for _, title in _metrics(results))
  text += (f"\nValidation {shown} (NLL in nats) of {config_spec} fine-tuned from {pretrained}, mean ± std over "
           f"seeds 0..{seeds - 1}; {len(budgets) * len(modes) * seeds} runs, "
           f"{metrics.format_duration(time.perf_counter() - tick)} wall.\n")
  if 0 in budgets:
    all_labels, num_classes = _labeled_pool(config_spec, pretrained, overrides)
    headline = [line for key, _ in _metrics(results) if key != "loss"
                for line in matches_scratch(results, budgets, modes, all_labels, num_classes, key)]
    text += "\n" + "\n".join(headline) + "\n" if headline else ""
    plot(results, budgets, modes, all_labels / num_classes, os.path.join(root, "transfer.png"))
  else:
    plot(results, budgets, modes, 0.0, os.path.join(root, "transfer.png"))
  with open(os.path.join(root, "table.md"), "w") as f:
    f.write(text)
  return text


def main(argv):
  del argv
  if FLAGS.pretrain_config:
    pretrain(FLAGS.pretrain_config, FLAGS.pretrained)
  budgets = [0 if b == "all" else int(b) for b in FLAGS.budgets]
  text = run_and_report(config_spec=FLAGS.config, pretrained=FLAGS.pretrained, root=FLAGS.root,
                        budgets=budgets, modes=FLAGS.modes, seeds=FLAGS.seeds, overrides=cli.OVERRIDES)
  print("\n" + text)


if __name__ == "__main__":
  cli.run(main, required=("pretrained",))
