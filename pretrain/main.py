"""Command line: python -m pretrain.main --config configs/NAME.py[:VARIANT] --workdir DIR [--config.a.b=value ...]

Overrides accept `--config.a.b=value` and `--config.a.b value`. Errors of the project's own kind print
as one line and exit with status 2.
"""

from absl import flags

from pretrain import cli

flags.DEFINE_string("config", None, "Config file, optionally with a variant: configs/NAME.py[:VARIANT].")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, TensorBoard events, config.json.")
FLAGS = flags.FLAGS


def main(argv):
  from pretrain import distributed, finetune  # Imported after flag parsing so `--help` is fast.
  distributed.initialize_from_env()
  config = cli.load_config(FLAGS.config, cli.OVERRIDES)
  finetune.train(config, FLAGS.workdir)  # Pretraining when config.init names no pretrained run.


if __name__ == "__main__":
  cli.run(main, required=("config", "workdir"))
