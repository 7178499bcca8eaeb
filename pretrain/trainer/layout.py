"""Every path inside a run directory, in one place.

  DIR/config.json       the config the run trained with (configlib.to_json; read back through run_dir.saved_config)
  DIR/dataset.json      what its data was: name, vocabulary size, classes and their names, what the token ids mean
  DIR/run.json          the ledger: command, code, packages, hardware, status, wall time, final metrics
  DIR/metrics.jsonl     one JSON line per log, evaluation and event
  DIR/tensorboard/      TensorBoard events (and profiler traces under plugins/profile)
  DIR/checkpoints/STEP  Orbax checkpoints of the whole train state
  DIR/wandb_run_id      the Weights & Biases run this directory logs to
"""
from pretrain import storage


def config(workdir: str) -> str:
  return storage.join(workdir, "config.json")


def dataset(workdir: str) -> str:
  return storage.join(workdir, "dataset.json")


def ledger(workdir: str) -> str:
  return storage.join(workdir, "run.json")


def metrics(workdir: str) -> str:
  return storage.join(workdir, "metrics.jsonl")


def tensorboard(workdir: str) -> str:
  return storage.join(workdir, "tensorboard")


def checkpoints(workdir: str) -> str:
  return storage.join(workdir, "checkpoints")


def wandb_run_id(workdir: str) -> str:
  return storage.join(workdir, "wandb_run_id")
