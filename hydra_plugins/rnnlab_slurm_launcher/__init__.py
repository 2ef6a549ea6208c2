"""``hydra/launcher=rnnlab_slurm``: hydra-submitit-launcher's SLURM launcher, waiting on jobs
with squeue so a job that dies on its node fails its child run visibly instead of stopping the
sweep (``conf/cluster/slurm.yaml`` selects it)."""
