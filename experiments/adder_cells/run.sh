#!/usr/bin/env bash
# adder_cells: which cells learn iamtrask's 8-bit adder, how fast, and do they generalise to
# longer sums? 3 cells × 5 seeds at the adder's seed settings (hidden 16, SGD lr 0.1, squared
# error, one sum per iteration, 10,000 iterations), every cell evaluated on all 16,384 8-bit sums
# every 100 iterations (iters_to_100 on one grid for all cells). Run from a scratch folder: the
# MLflow store (./mlflow.db) stays out of the repository.
set -euo pipefail
nice -n 10 python -m rnnlab.run -m task=adder cell=rnn,gru,lstm seed=0,1,2,3,4 \
    iterations=10000 eval_every=100 checkpoint_every=10000 experiment_name=adder_cells
# exact accuracy at 8, 16 and 32 bits from every FINISHED run's final checkpoint → results.md
nice -n 10 python "$(dirname "$0")/generalise.py" experiment=adder_cells
