"""python -m pretrain.hf import|export|check: see pretrain/hf/__init__.py."""
from absl import flags

from pretrain import cli, hf

FLAGS = flags.FLAGS
USAGE = ("usage: python -m pretrain.hf import --hf-dir D --workdir W | export --workdir W --hf-dir D | "
         "check --hf-dir D --workdir W")


def main(argv):
  commands = ("import", "export", "check")
  if len(argv) != 2 or argv[1] not in commands:
    cli.fail(USAGE)
  for name in ("hf-dir", "workdir"):
    if FLAGS[name].value is None:
      cli.fail(f"--{name} is required")
  hf_dir = FLAGS["hf-dir"].value
  if argv[1] == "import":
    config = cli.load_config(FLAGS.config, cli.OVERRIDES) if FLAGS.config else None
    config = hf.import_hf(hf_dir, FLAGS.workdir, config)
    m = config.model
    kind = hf.read_hf_config(hf_dir).get("model_type")
    print(f"imported {kind} ({m.num_layers} layers, width {m.width}, vocab {m.vocab_size}, context {m.context}) "
          f"into {FLAGS.workdir}; tokenizer: {config.data.tokenizer_path or 'none in --hf-dir'}")
  elif argv[1] == "export":
    kind = hf.export_hf(FLAGS.workdir, hf_dir, FLAGS.step)
    print(f"exported {FLAGS.workdir} to {hf_dir} (model_type {kind})")
  else:
    from pretrain.hf import check
    check.check(hf_dir, FLAGS.workdir, FLAGS.step)


def define_flags():
  flags.DEFINE_string("hf-dir", None, "Transformers directory: config.json + model.safetensors (or a sharded index).")
  flags.DEFINE_alias("hf_dir", "hf-dir")
  flags.DEFINE_string("workdir", None, "Run directory to write (import) or read (export, check).")
  flags.DEFINE_string("config", None, "import: config whose non-model sections W keeps; default configs/base.py.")
  flags.DEFINE_integer("step", None, "export, check: checkpoint step; default the latest.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
