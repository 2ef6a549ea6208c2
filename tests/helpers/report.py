"""What the report tests share: tiny sweeps, their report folder, runs.csv and the page parsed."""

from __future__ import annotations

import csv
import io
import math
import random
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from mlflow.tracking import MlflowClient
from PIL import Image

from helpers.processes import run_cli

XSS = "<script>alert(1)</script>"  # samples and corpora may hold markup: the report escapes it

TINY = ["iterations=200", "log_every=20", "eval_every=50", "sample_every=100", "seq_length=10",
        "checkpoint_every=1000"]  # fmt: skip


def make_corpus(path: Path) -> Path:
    """A small text whose samples can contain markup (the prime starts every sample)."""
    rng = random.Random(0)
    words = f"the cat sat on a mat and {XSS} ran | away & back `tick`".split()
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)), encoding="utf-8")
    return path


def sweep(tmp: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    done = run_cli(["-m", *overrides], tmp, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def report_dir(done: subprocess.CompletedProcess, cwd: Path) -> Path:
    """The folder named by the callback's one line ``rnnlab: report: <path>``."""
    lines = [
        ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("rnnlab: report:")
    ]
    assert len(lines) == 1, done.stdout[-2000:] + done.stderr[-2000:]
    path = cwd / lines[0].split("rnnlab: report:", 1)[1].strip()
    assert path.name == "report.html" and path.is_file()
    return path.parent


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def children(client: MlflowClient, parent_id: str):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{parent_id}'")


def parent_of(store_dir: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{store_dir / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, "tags.`rnnlab.kind` = 'sweep'")
    assert len(parents) == 1
    return client, parents[0].info.run_id


def close(csv_value: str, mlflow_value: float | None) -> bool:
    if mlflow_value is None or (isinstance(mlflow_value, float) and math.isnan(mlflow_value)):
        return csv_value == ""
    return float(csv_value) == mlflow_value  # CSV floats round-trip exactly (repr)


class Page(HTMLParser):
    """Collects tags, image sources and the visible text of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every pixel; raises on a truncated or corrupt file
    assert image.format == "PNG" and image.width > 100 and image.height > 100
    return image
