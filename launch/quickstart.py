"""`make quickstart`: pretrain a small GPT on the embedded Markov dataset and compare its validation
bits/token with the exact entropy of the sources.

  python -m launch.quickstart --workdir runs/quickstart
"""
from absl import flags

from pretrain import cli

flags.DEFINE_string("workdir", "runs/quickstart", "Where the pretraining run lives (resumed if present).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from pretrain import train
  config = cli.load_config("configs/quickstart.py", cli.OVERRIDES)
  final = train.train(config, FLAGS.workdir)
  entropy = final["entropy_bits_per_token"]
  print(f"\nquickstart: validation {final['bits_per_token']:.4f} bits/token; the sources' entropy is "
        f"{entropy:.4f} bits/token (+{final['bits_above_entropy']:.4f}, "
        f"{100 * final['bits_above_entropy'] / entropy:.1f}% above the best possible model)")


if __name__ == "__main__":
  cli.run(main)
