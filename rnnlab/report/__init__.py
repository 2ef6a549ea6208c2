"""The comparison report of a sweep: ``python -m rnnlab.report [sweep=<id>] [out=...]``.

It reads only the MLflow store: ``select`` chooses runs, ``tables`` builds pandas tables,
``figures`` draws matplotlib PNGs, ``render`` writes HTML and Markdown. ``generate`` ties them
together, writes ``report.html``, ``report.md``, the PNGs and ``runs.csv`` into one folder, and
logs that folder under ``report/`` in the sweep's parent run. It does not train or change runs.
"""

from rnnlab.report.build import generate

__all__ = ["generate"]
