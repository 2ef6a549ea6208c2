"""Benchmarks: the engine against the seeds' algorithms and its own bounds, tracking and
diagnostics overheads, parallel and searched sweeps. Developer tools outside the library's
layers; nothing in the library imports them. ``python -m rnnlab.bench`` runs them."""
