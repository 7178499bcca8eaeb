"""Prepare a config's dataset ahead of training, once, so that a many-process job only reads it.

  python -m pretrain.prepare --config configs/NAME.py[:VARIANT] [--config.data.path=PATH ...]

Tokenizes (text) or converts (images, the Markov sequences) what `config.data` names into its folder under
data.data_dir ($PRETRAIN_DATA_DIR, default ~/.cache/pretrain/datasets), exactly as a training run would,
and prints one JSON line: the dataset, its vocabulary size and the size of each split. A run with the same
data settings then starts reading at once; a run whose data is not prepared prepares it on process 0
while the other processes wait.
"""
import json
import time

from absl import flags

from pretrain import cli, data

FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = cli.load_config(FLAGS.config, cli.OVERRIDES)
  start = time.perf_counter()
  dataset = data.load(config)
  print(json.dumps({"data": dataset.name, "vocab_size": dataset.vocab_size, "train": len(dataset.train),
                    "validation": len(dataset.val), "unit": "tokens" if isinstance(dataset.train, data.TokenStream)
                    else "examples", "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
  flags.DEFINE_string("config", None, "Config file whose data section to prepare: configs/NAME.py[:VARIANT].")
  cli.run(main, required=("config",))
