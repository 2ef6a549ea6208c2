#!/usr/bin/env bash
# cells_kafka: rnn / gru / lstm × layers 1, 2 on Kafka at ~36.7k parameters each (hidden sizes
# chosen so; see README), 3 seeds, 32 streams of 25 characters in float32, Adagrad lr 0.1
# (the char-RNN's defaults otherwise), 2,000 iterations = 1.6M characters ≈ 12.7 passes over the
# training text. Run from a scratch folder: the MLflow store stays out of the repository.
set -euo pipefail
common=(seed=0,1,2 batch_size=32 dtype=float32 iterations=2000 log_every=50 eval_every=250
        sample_every=1000 checkpoint_every=2000 experiment_name=cells_kafka)
for model in "rnn 1 139" "rnn 2 92" "gru 1 76" "gru 2 51" "lstm 1 64" "lstm 2 43"; do
    read -r cell layers hidden <<<"$model"
    nice -n 5 python -m rnnlab.run -m cell="$cell" layers="$layers" hidden_size="$hidden" "${common[@]}"
done
nice -n 5 python -m rnnlab.report experiment=cells_kafka out="$(dirname "$0")" samples_at=1000 log=false
