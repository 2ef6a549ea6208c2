#!/usr/bin/env bash
# adder_cells: which cells learn iamtrask's 8-bit adder, how fast, and do they generalise to
# longer sums? 3 cells × 5 seeds at the adder's seed settings (hidden 16, SGD lr 0.1, squared
# error, 10,000 iterations). Run from a scratch folder: the MLflow store stays out of the repo.
#
# What ran on 2026-12-01 (the machine was overloaded, load average 12-18 on 2 cores): the first
# command, stopped by SIGINT after 7 runs (rnn seeds 0-4, gru seeds 0-1; evaluation every 100
# iterations on 8- and 16-bit sums cost ~1 s of CPU each for the gated cells), then the other
# two, evaluating every 500 iterations on 8-bit sums only.
set -euo pipefail
nice -n 5 python -m rnnlab.run -m task=adder cell=rnn,gru,lstm seed=0,1,2,3,4 \
    task.eval_bits=16 iterations=10000 checkpoint_every=10000 experiment_name=adder_cells
nice -n 5 python -m rnnlab.run -m task=adder cell=gru seed=2,3,4 iterations=10000 eval_every=500 \
    checkpoint_every=10000 experiment_name=adder_cells hydra/launcher=joblib hydra.launcher.n_jobs=2
nice -n 5 python -m rnnlab.run -m task=adder cell=lstm seed=0,1,2,3,4 iterations=10000 \
    eval_every=500 checkpoint_every=10000 experiment_name=adder_cells \
    hydra/launcher=joblib hydra.launcher.n_jobs=2
# exact accuracy at 8, 16 and 32 bits from every FINISHED run's final checkpoint → results.md
nice -n 5 python "$(dirname "$0")/generalise.py" experiment=adder_cells
