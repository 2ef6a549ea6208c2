#!/usr/bin/env bash
# adder_cells: which cells learn iamtrask's 8-bit adder, how fast, and do they generalise to
# longer sums? 3 cells × 5 seeds at the adder's seed settings (hidden 16, SGD lr 0.1, squared
# error, 10,000 iterations, evaluated every 100), evaluated during training on 16-bit sums too.
# Run from a scratch folder: the MLflow store and checkpoints stay out of the repository.
set -euo pipefail
nice -n 5 python -m rnnlab.run -m task=adder cell=rnn,gru,lstm seed=0,1,2,3,4 \
    task.eval_bits=16 iterations=10000 checkpoint_every=10000 experiment_name=adder_cells
# exact accuracy at 8, 16 and 32 bits from every run's final checkpoint
nice -n 5 python "$(dirname "$0")/generalise.py" experiment=adder_cells
