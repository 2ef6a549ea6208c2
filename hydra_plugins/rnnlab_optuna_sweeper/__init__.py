"""``hydra/sweeper=rnnlab_optuna``: an Optuna (≥ 4) search with pruning, as a Hydra sweeper.

The plugin is thin: the config schema lives in ``config``, the sweep loop in ``sweeper``, and
everything that is not Hydra glue (search spaces, samplers, pruners, the trial's tracker, the
trials table) in ``rnnlab.sweeps.search``, where it can be tested without Hydra.
"""
