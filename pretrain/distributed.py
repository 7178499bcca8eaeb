"""Multi-process start-up through JAX's own runtime (jax.distributed).

Explicit: `launch.multiprocess` (or you) sets PRETRAIN_COORDINATOR=host:port, PRETRAIN_NUM_PROCESSES
and PRETRAIN_PROCESS_ID. Automatic: under SLURM with more than one task, or on a multi-host TPU VM,
jax.distributed.initialize() reads the cluster from the environment.
"""
import os

import jax


def initialize_from_env() -> None:
  coordinator = os.environ.get("PRETRAIN_COORDINATOR")
  if coordinator:
    # Must precede any backend use; only affects CPU devices (gloo carries their collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["PRETRAIN_NUM_PROCESSES"]),
                               process_id=int(os.environ["PRETRAIN_PROCESS_ID"]))
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("PRETRAIN_TPU_MULTIHOST") == "1":
    jax.distributed.initialize()
