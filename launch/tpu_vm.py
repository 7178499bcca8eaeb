"""Run one job on every host of a Cloud TPU VM slice (`--worker=all`).

  python -m launch.tpu_vm --tpu NAME --zone ZONE [--project P] [--repo ~/pretrain] [--run] \
      -- --config configs/gpt2_124m.py --workdir gs://bucket/runs/gpt2

Without --run it prints the gcloud commands (a dry run). The same `python -m pretrain.main ...` runs on
every host; PRETRAIN_TPU_MULTIHOST=1 makes pretrain.distributed call jax.distributed.initialize(),
which finds the slice's coordinator by itself. First command installs the project on every host.
"""
import argparse
import shlex
import subprocess
import sys


def commands(*, tpu, zone, project, repo, args) -> list[list[str]]:
  base = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}", "--worker=all"]
  if project:
    base.append(f"--project={project}")
  install = f"cd {repo} && python3 -m pip install -q -e . 'jax[tpu]'"
  run = f"cd {repo} && PRETRAIN_TPU_MULTIHOST=1 python3 -m pretrain.main {' '.join(shlex.quote(a) for a in args)}"
  return [base + [f"--command={install}"], base + [f"--command={run}"]]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tpu", required=True)
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default="")
  p.add_argument("--repo", default="~/pretrain", help="Where the project is checked out on every host.")
  p.add_argument("--run", action="store_true", help="Execute the commands; default: print them.")
  p.add_argument("args", nargs=argparse.REMAINDER)
  o = p.parse_args(argv)
  args = o.args[1:] if o.args[:1] == ["--"] else o.args
  cmds = commands(tpu=o.tpu, zone=o.zone, project=o.project, repo=o.repo, args=args)
  for cmd in cmds:
    if o.run:
      code = subprocess.call(cmd)
      if code:
        return code
    else:
      print(shlex.join(cmd))
  return 0


if __name__ == "__main__":
  sys.exit(main())
