"""A SLURM batch script for one job over many GPU nodes: one process per GPU, started by `srun`.

  python -m launch.slurm --nodes 4 --gpus-per-node 8 [--partition P] [--time 24:00:00] [--submit] \
      -- --config configs/gpt2_124m.py --workdir /shared/runs/gpt2

Without --submit it prints the script (a dry run); with --submit it writes it next to the workdir and
calls sbatch. Each task runs `python -m pretrain.main ...` with the coordinator taken from the node
list (the first node, port 12355) and its process id from SLURM_PROCID; pretrain.distributed then
calls jax.distributed.initialize with them.
"""
import argparse
import os
import shlex
import subprocess
import sys

TEMPLATE = """#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node={gpus}
#SBATCH --gpus-per-node={gpus}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
{partition}#SBATCH --output={log_dir}/slurm-%j.out
set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export PRETRAIN_COORDINATOR="$head_node:{port}"
export PRETRAIN_NUM_PROCESSES=$SLURM_NTASKS
srun --kill-on-bad-exit=1 bash -c 'CUDA_VISIBLE_DEVICES=$SLURM_LOCALID PRETRAIN_PROCESS_ID=$SLURM_PROCID exec {python} -m pretrain.main {args}'
"""


def script(*, nodes, gpus, cpus, time, partition, port, python, args, job_name="pretrain") -> str:
  workdir = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--workdir"), ".")
  return TEMPLATE.format(job_name=job_name, nodes=nodes, gpus=gpus, cpus=cpus, time=time, port=port,
                         partition=f"#SBATCH --partition={partition}\n" if partition else "",
                         log_dir=workdir, python=python, args=" ".join(shlex.quote(a) for a in args))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--nodes", type=int, default=1)
  p.add_argument("--gpus-per-node", type=int, default=8)
  p.add_argument("--cpus-per-task", type=int, default=8)
  p.add_argument("--time", default="24:00:00")
  p.add_argument("--partition", default="")
  p.add_argument("--port", type=int, default=12355)
  p.add_argument("--python", default="python")
  p.add_argument("--submit", action="store_true", help="Write the script and sbatch it; default: print it.")
  p.add_argument("args", nargs=argparse.REMAINDER)
  o = p.parse_args(argv)
  args = o.args[1:] if o.args[:1] == ["--"] else o.args
  text = script(nodes=o.nodes, gpus=o.gpus_per_node, cpus=o.cpus_per_task, time=o.time, partition=o.partition,
                port=o.port, python=o.python, args=args)
  if not o.submit:
    print(text, end="")
    return 0
  workdir = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--workdir"), ".")
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "job.sbatch")
  with open(path, "w") as f:
    f.write(text)
  return subprocess.call(["sbatch", path])


if __name__ == "__main__":
  sys.exit(main())
