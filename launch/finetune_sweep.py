"""What pretraining buys: scratch vs linear probe vs full fine-tuning, across label budgets and seeds.

  python -m launch.finetune_sweep --pretrained runs/quickstart --workdir runs/finetune_sweep \
      [--budgets 8,32,128] [--seeds 0,1,2] [--modes scratch,linear_probe,full] \
      [--config configs/quickstart_finetune.py] [--config.a.b=value ...]

Every run is `pretrain.main --config CONFIG --config.init.workdir=PRETRAINED --config.init.mode=MODE
--config.data.labels_per_class=BUDGET --config.seed=SEED` in WORKDIR/MODE-BUDGET-sSEED (rerunning resumes
or, when finished, only re-evaluates). The seed chooses the labeled subset, the head's init and the batch
order; the modes of one seed see the same labeled examples. Writes WORKDIR/table.md: validation accuracy
and label NLL (nats), mean ± std over seeds.
"""
import os
import time

import numpy as np
from absl import flags

from pretrain import cli

flags.DEFINE_string("pretrained", None, "Run directory of the pretrained model (configs/quickstart.py).")
flags.DEFINE_string("workdir", "runs/finetune_sweep", "Where the fine-tuning runs and table.md go.")
flags.DEFINE_string("config", "configs/quickstart_finetune.py", "The fine-tuning config.")
flags.DEFINE_list("budgets", ["8", "32", "128"], "Labeled examples per class.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each gives every mode the same labeled subset.")
flags.DEFINE_list("modes", ["scratch", "linear_probe", "full"], "init.mode values to compare.")
FLAGS = flags.FLAGS


def enable_compile_cache(directory: str) -> None:
  """Runs that differ only in their labeled subset compile to the same program: keep compiled programs on
  disk so each is built once."""
  import jax
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def sweep(*, config_spec, pretrained, workdir, budgets, seeds, modes, overrides=()) -> dict:
  """Runs every (mode, budget, seed); returns {(mode, budget): [final eval metrics per seed]}."""
  from pretrain import train
  results = {}
  for budget in budgets:
    for seed in seeds:
      for mode in modes:
        config = cli.load_config(config_spec, [*overrides, ("init.workdir", pretrained), ("init.mode", mode),
                                               ("data.labels_per_class", str(budget)), ("seed", str(seed))])
        tick = time.perf_counter()
        final = train.train(config, os.path.join(workdir, f"{mode}-{budget}-s{seed}"))
        print(f"sweep: {mode} {budget}/class seed {seed}: accuracy {final['accuracy']:.4f}, "
              f"NLL {final['loss']:.4f} ({time.perf_counter() - tick:.0f} s)", flush=True)
        results.setdefault((mode, budget), []).append(final)
  return results


def _cell(values) -> str:
  values = np.asarray(values, dtype=np.float64)
  std = values.std(ddof=1) if len(values) > 1 else 0.0
  return f"{values.mean():.3f} ± {std:.3f}"


def table(results, budgets, modes, seeds) -> str:
  """Markdown: one row per budget, accuracy then label NLL per mode, mean ± sample std over seeds."""
  head = ["labels/class", *[f"{m} acc" for m in modes], *[f"{m} NLL" for m in modes]]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for b in budgets:
    acc = [_cell([r["accuracy"] for r in results[(m, b)]]) for m in modes]
    nll = [_cell([r["loss"] for r in results[(m, b)]]) for m in modes]
    lines.append("| " + " | ".join([str(b), *acc, *nll]) + " |")
  lines.append(f"\nValidation accuracy and label NLL (nats), mean ± std over seeds {', '.join(map(str, seeds))}.")
  return "\n".join(lines) + "\n"


def run_and_report(*, config_spec, pretrained, workdir, budgets, seeds, modes, overrides=()) -> str:
  os.makedirs(workdir, exist_ok=True)
  enable_compile_cache(os.path.join(workdir, "jax_cache"))
  tick = time.perf_counter()
  results = sweep(config_spec=config_spec, pretrained=pretrained, workdir=workdir, budgets=budgets, seeds=seeds,
                  modes=modes, overrides=overrides)
  text = table(results, budgets, modes, seeds)
  text += f"Wall time {time.perf_counter() - tick:.0f} s for {len(budgets) * len(seeds) * len(modes)} runs.\n"
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(text)
  return text


def main(argv):
  del argv
  text = run_and_report(config_spec=FLAGS.config, pretrained=FLAGS.pretrained, workdir=FLAGS.workdir,
                        budgets=[int(b) for b in FLAGS.budgets], seeds=[int(s) for s in FLAGS.seeds],
                        modes=FLAGS.modes, overrides=cli.OVERRIDES)
  print("\n" + text)


if __name__ == "__main__":
  cli.run(main, required=("pretrained",))
