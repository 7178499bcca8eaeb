"""`make quickstart`: pretrain a small GPT on the embedded Markov dataset, compare its validation bits/token
with the exact entropy of the sources and the best possible model's score, then fine-tune it to tell the
sources apart from 8 labels per class, against the same model trained from scratch and a linear probe
(3 seeds each).

  python -m launch.quickstart --workdir runs/quickstart

The fine-tuning runs and their table go to WORKDIR_finetune (see launch/finetune_sweep.py for all budgets).
"""
from absl import flags

from pretrain import cli

flags.DEFINE_string("workdir", "runs/quickstart", "Where the pretraining run lives (resumed if present).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from launch import finetune_sweep
  from pretrain.trainer import train
  config = cli.load_config("configs/quickstart.py", cli.OVERRIDES)
  final = train.train(config, FLAGS.workdir)
  bits, entropy = final["bits_per_token"], final["entropy_bits_per_token"]
  pretraining = (f"quickstart: validation {bits:.4f} bits/token; the sources' entropy rate (a sequence's entropy "
                 f"given its source) is {entropy:.4f} bits/token ({100 * (bits / entropy - 1):+.1f}%)")
  if "best_bits_per_token" in final:
    best = final["best_bits_per_token"]
    pretraining += (f"; the best possible model, which must infer the source from the sequence, scores {best:.4f} "
                    f"({100 * (bits / best - 1):+.1f}%)")
  print(f"\n{pretraining}\n", flush=True)
  root = FLAGS.workdir.rstrip("/") + "_finetune"
  table = finetune_sweep.run_and_report(config_spec="configs/quickstart_finetune.py", pretrained=FLAGS.workdir,
                                        root=root, budgets=[8], modes=["scratch", "linear_probe", "full"], seeds=3)
  print(f"\n{pretraining}\n\nWhich source emitted a 16-token sequence, from 8 labels per class "
        f"(configs/quickstart_finetune.py):\n\n{table}")


if __name__ == "__main__":
  cli.run(main)
