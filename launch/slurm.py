"""A SLURM batch script for one job over many GPU nodes: one process per GPU, started by `srun`.

  python -m launch.slurm --nodes 4 --gpus-per-node 8 [--partition P] [--time 24:00:00] [--requeue] [--submit] \
      -- --config configs/gpt2_124m.py --workdir /shared/runs/gpt2 "--config.parallel.mesh_shape=(-1,8)"

Without --submit it prints the script (a dry run); with --submit it writes WORKDIR/job.sbatch and calls
sbatch. The arguments after `--` are written once, as a bash array, and reach `pretrain.main` as "$@": any
override that needs quoting (a tuple, a regex rule) arrives as written. Each task takes its GPU and
process id from SLURM (SLURM_LOCALID, SLURM_PROCID) and the coordinator is the first node of the
allocation; pretrain.distributed then calls jax.distributed.initialize with them.

Preemption: `#SBATCH --signal=TERM@GRACE` has SLURM send SIGTERM to every task GRACE seconds before the
time limit, and a SIGTERM to the batch script (scancel --signal=TERM, a preemption) is passed on to them;
each task saves a checkpoint of its current step and exits 143. With --requeue the script then requeues
its own job, and any resubmission of the same script resumes from the newest checkpoint.
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
#SBATCH --signal=TERM@{grace}
#SBATCH --open-mode=append
{sbatch_extra}#SBATCH --output={log_dir}/slurm-%j.out
# Written by `python -m launch.slurm`. Submitting it again resumes the run from its newest checkpoint.
set -uo pipefail
ARGS=({args})
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export PRETRAIN_COORDINATOR="$head_node:{port}"
export PRETRAIN_NUM_PROCESSES=$SLURM_NTASKS
# The bash -c text is fixed; the run's arguments arrive as "$@", quoted once, in ARGS above.
srun --kill-on-bad-exit=1 bash -c 'CUDA_VISIBLE_DEVICES=$SLURM_LOCALID PRETRAIN_PROCESS_ID=$SLURM_PROCID exec "$@"' \\
  task {python} -m pretrain.main "${{ARGS[@]}}" &
step=$!
# A SIGTERM (preemption, scancel --signal=TERM) reaches every task, which checkpoints and exits 143.
trap 'kill -TERM "$step" 2>/dev/null' TERM INT
wait "$step"; rc=$?
while kill -0 "$step" 2>/dev/null; do wait "$step"; rc=$?; done  # The signal ended the wait, not the tasks.
{requeue_line}exit "$rc"
"""


def script(*, nodes, gpus, cpus, time, partition, port, python, args, grace=120, requeue=False,
           job_name="pretrain") -> str:
  workdir = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--workdir"), ".")
  extra = (f"#SBATCH --partition={partition}\n" if partition else "") + ("#SBATCH --requeue\n" if requeue else "")
  requeue_line = ('if [ "$rc" -eq 143 ]; then scontrol requeue "$SLURM_JOB_ID" || true; fi  # stopped by a signal\n'
                  if requeue else "")
  return TEMPLATE.format(job_name=job_name, nodes=nodes, gpus=gpus, cpus=cpus, time=time, port=port, grace=grace,
                         sbatch_extra=extra, log_dir=workdir, python=shlex.quote(python),
                         args=" ".join(shlex.quote(a) for a in args), requeue_line=requeue_line)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--nodes", type=int, default=1)
  p.add_argument("--gpus-per-node", type=int, default=8)
  p.add_argument("--cpus-per-task", type=int, default=8)
  p.add_argument("--time", default="24:00:00")
  p.add_argument("--partition", default="")
  p.add_argument("--port", type=int, default=12355)
  p.add_argument("--python", default="python")
  p.add_argument("--signal-grace", type=int, default=120,
                 help="Seconds before the time limit at which SLURM sends SIGTERM to the tasks.")
  p.add_argument("--requeue", action="store_true", help="Requeue the job when a signal stopped it.")
  p.add_argument("--submit", action="store_true", help="Write the script and sbatch it; default: print it.")
  p.add_argument("args", nargs=argparse.REMAINDER)
  o = p.parse_args(argv)
  args = o.args[1:] if o.args[:1] == ["--"] else o.args
  text = script(nodes=o.nodes, gpus=o.gpus_per_node, cpus=o.cpus_per_task, time=o.time, partition=o.partition,
                port=o.port, python=o.python, args=args, grace=o.signal_grace, requeue=o.requeue)
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
