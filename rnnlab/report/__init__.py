"""The comparison report of a sweep: ``python -m rnnlab.report [sweep=<id>] [out=...]``.

It reads only the MLflow store: ``select`` chooses runs, ``tables`` builds pandas tables,
``figures`` draws matplotlib PNGs, ``render`` writes HTML and Markdown. ``generate`` ties them
together: it writes ``report.html``, ``report.md``, the PNGs and ``runs.csv`` into one folder,
logs that folder under ``report/`` in the sweep's parent run, and returns the path of
``report.html`` and the selection. It does not train or change runs.
"""

__all__ = ["generate"]


def __getattr__(name: str):
    # Lazy: Hydra imports rnnlab.report.callback in every `python -m rnnlab.run`, and build
    # pulls in matplotlib and pandas (~0.5-1 s of CPU per process) that only a report needs.
    if name == "generate":
        from rnnlab.report.build import generate

        return generate
    raise AttributeError(f"module 'rnnlab.report' has no attribute {name!r}")
