"""Corpus resolution (path → data dir → download), the downloader against a real HTTP server on
127.0.0.1, and the one-line errors for files that cannot be a corpus."""

from __future__ import annotations

import functools
import hashlib
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers.processes import ROOT, run_cli

from rnnlab.tasks import corpus
from rnnlab.tasks.corpus import CorpusError

BOOK = "One morning, when Gregor Samsa woke from troubled dreams…\n" * 200


class Server:
    """A static file server in a thread that counts the requests it answers."""

    def __init__(self, folder: Path):
        self.paths: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.paths.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self.httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "book.txt").write_text(BOOK, encoding="utf-8")
    s = Server(served)
    yield s
    s.close()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty data dir selected through RNNLAB_DATA_DIR."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(d))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return d


def refused_url() -> str:
    """A URL on 127.0.0.1 whose port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/book.txt"


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def test_data_dir_comes_from_env_else_the_project(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path))
    assert corpus.data_dir() == tmp_path
    monkeypatch.delenv("RNNLAB_DATA_DIR")
    assert corpus.data_dir() == ROOT / "data"


def test_explicit_path_wins_then_data_dir_then_download(tmp_path, data_dir, server):
    url = f"{server.url}/book.txt"
    mine = tmp_path / "mine.txt"
    mine.write_text("my own text", encoding="utf-8")
    (data_dir / "book.txt").write_text("local copy", encoding="utf-8")

    assert corpus.resolve("book", str(mine), url) == mine  # 1. the explicit path
    assert corpus.resolve("book", None, url) == data_dir / "book.txt"  # 2. the data dir
    assert server.paths == []  # neither touched the network

    (data_dir / "book.txt").unlink()
    got = corpus.resolve("book", None, url)  # 3. the download, into the data dir
    assert got == data_dir / "book.txt"
    assert server.paths == ["/book.txt"]
    expected = hashlib.sha256(BOOK.encode("utf-8")).hexdigest()
    assert corpus.sha256_of(got) == expected
    assert corpus.read_text(got) == BOOK
    assert sorted(p.name for p in data_dir.iterdir()) == ["book.txt"]  # no .part left over

    assert corpus.resolve("book", None, url) == got  # now local: not downloaded again
    assert server.paths == ["/book.txt"]


def test_download_404_is_one_line_saying_where_to_put_the_file(data_dir, server):
    with pytest.raises(CorpusError) as err:
        corpus.resolve("missing", None, f"{server.url}/missing.txt")
    msg = one_line(err)
    assert "not found" in msg.lower() and "data.path" in msg
    assert str(data_dir / "missing.txt") in msg
    assert server.paths == ["/missing.txt"]
    assert list(data_dir.iterdir()) == []  # nothing half-written


def test_refused_connection_is_one_line_saying_where_to_put_the_file(data_dir):
    url = refused_url()
    with pytest.raises(CorpusError) as err:
        corpus.resolve("book", None, url)
    msg = one_line(err)
    assert url in msg and "refused" in msg.lower() and str(data_dir / "book.txt") in msg
    assert list(data_dir.iterdir()) == []


def test_unknown_name_without_source_and_missing_path(data_dir, tmp_path):
    with pytest.raises(CorpusError) as err:
        corpus.resolve("nosuchbook")
    msg = one_line(err)
    assert "'nosuchbook'" in msg and str(data_dir / "nosuchbook.txt") in msg and "kafka" in msg
    with pytest.raises(CorpusError) as err:
        corpus.resolve("kafka", str(tmp_path / "nowhere.txt"))
    assert "nowhere.txt" in one_line(err)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        ("caf\xe9 au lait".encode("latin-1"), r"is not UTF-8 text (byte 3: b'\xe9')"),
        (b"x", "has 1 characters; need at least 2"),
    ],
    ids=["empty", "latin1", "too-short"],
)
def test_unusable_files_give_one_clear_line(tmp_path, content, expected):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError) as err:
        corpus.read_text(path)
    msg = one_line(err)
    assert expected in msg and str(path) in msg


def test_utf8_text_reads_back_exactly(tmp_path):
    path = tmp_path / "good.txt"
    path.write_text("Grüße, ☃\n", encoding="utf-8")
    assert corpus.read_text(path) == "Grüße, ☃\n"


@pytest.mark.parametrize("case", ["empty", "refused"])
def test_cli_reports_corpus_problems_in_one_line_before_any_job(tmp_path, case):
    if case == "empty":
        (tmp_path / "empty.txt").write_bytes(b"")
        args, env = ["data=file", f"data.path={tmp_path / 'empty.txt'}"], {}
        expected = "is empty"
    else:
        args = ["data.name=nosuchbook", f"data.url={refused_url()}"]
        env = {"RNNLAB_DATA_DIR": str(tmp_path / "data"), "NO_PROXY": "127.0.0.1"}
        expected = f"put a UTF-8 text file at {tmp_path / 'data' / 'nosuchbook.txt'}"
    done = run_cli([*args, "iterations=5"], cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: ") and expected in lines[0]
    assert not (tmp_path / "mlflow.db").exists()  # stopped before any run was recorded


def test_gutenberg_licence_is_cut_and_other_texts_are_untouched():
    book = "Chapter 1\nOne morning.\n"
    wrapped = (
        "The Project Gutenberg EBook of X\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\n"
        + book
        + "\n\nEnd of the Project Gutenberg EBook of X\nlicence text, @#$ symbols\n"
    )
    assert corpus.strip_gutenberg(wrapped) == book
    footer_only = book + "\nEnd of Project Gutenberg's X\n*** END OF THE PROJECT GUTENBERG EBOOK\n"
    assert corpus.strip_gutenberg(footer_only) == book
    plain = "\n\nno markers here, leading and trailing newlines kept\n\n"
    assert corpus.strip_gutenberg(plain) == plain


def test_kafka_without_licence_is_the_story(kafka_path):
    text = corpus.strip_gutenberg(corpus.read_text(kafka_path))
    assert text.startswith("One morning, when Gregor Samsa woke")
    assert text.rstrip().endswith("stretch out her young body.")
    assert "Gutenberg" not in text and len(text) == 118_561 and len(set(text)) == 62
