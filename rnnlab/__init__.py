"""rnnlab: a research harness for small recurrent networks in numpy."""

__version__ = "0.1.0"
