"""Shared command-line plumbing: `--config.a.b` overrides beside absl flags, and one-line errors."""
import sys

from absl import app, flags, logging

from pretrain import configlib
from pretrain.errors import Preempted, PretrainError

OVERRIDES: list[tuple[str, str]] = []  # (dotted key, text) pairs taken from argv before absl sees it.


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Separates `--config.a.b=v` / `--config.a.b v` from the flags absl parses."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      key, eq, value = arg[len("--config."):].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          raise PretrainError(f"--config.{key} needs a value: --config.{key}=VALUE")
        value, i = argv[i + 1], i + 1
      overrides.append((key, value))
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def load_config(spec, overrides):
  if not spec:
    raise PretrainError("--config is required: --config configs/NAME.py[:VARIANT]")
  return configlib.load(spec, overrides)


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def run(main, required=()):
  """absl's app.run with overrides split off, required flags checked and project errors as one line."""
  try:
    argv, overrides = split_overrides(sys.argv)
  except PretrainError as e:
    fail(str(e))
  OVERRIDES[:] = overrides

  def guarded(args):
    logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file they touch at INFO.
    for name in required:
      if flags.FLAGS[name].value is None:
        fail(f"--{name} is required")
    try:
      main(args)
    except Preempted as e:
      print(f"preempted: {e}", file=sys.stderr, flush=True)
      sys.exit(e.exit_code)
    except PretrainError as e:
      fail(str(e))

  sys.argv = argv
  app.run(guarded)
