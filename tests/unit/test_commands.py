"""Every command but the Hydra app speaks one convention (``rnnlab.cli``): ``--help`` exits 0 and
lists every key with its default; an unknown key and a bad value each cost one line on stderr
and exit code 2, before any work. Run through ``cli.main`` in this process, as ``python -m``
runs it (one command also as a real process)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.processes import run_cli

import rnnlab

# command module → (an unknown key, a bad value) on its command line
COMMANDS = {
    "rnnlab.sample": (["run_id=abcdef", "lenght=9"], ["run_id=abcdef", "length=abc"]),
    "rnnlab.score": (["checkpoint=x.npz", "tekst=hi"], ["checkpoint=x.npz", "json=maybe"]),
    "rnnlab.inspect": (["checkpoint=x.npz", "outt=p.html"], ["checkpoint=x.npz", "model_from=no"]),
    "rnnlab.export": (["checkpoint=x.npz", "outfile=m.npz"], ["checkpoint=x.npz", "out=model.pt"]),
    "rnnlab.model": (["register", "sweep=abcdef", "nam=k"], ["register", "sweep=abc", "name=a/b"]),
    "rnnlab.sync": (["abcdef", "uri=x"], ["not-a-run-or-folder"]),
    "rnnlab.cluster": (["up", "folder=/tmp/x"], ["sideways"]),
    "rnnlab.bench.__main__": (["round=3"], ["rounds=0"]),
    "rnnlab.bench.sweeps": (["seed=1"], ["what=everything"]),
    "rnnlab.report.__main__": (["swept=latest"], ["log=maybe"]),
}  # fmt: skip


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """``python -m <module> <argv>``, in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_lists_every_key_with_its_default(module, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(module, ["--help"], capsys)
    assert code == 0 and err == ""
    command = importlib.import_module(module).COMMAND
    subs = list(command.verbs.values()) or [command]
    for sub in subs:
        for key in sub.keys:
            assert f"{key.name}=" in out and f"(default: {key.shown_default()})" in out, key


@pytest.mark.parametrize("which", ["unknown key", "bad value"])
@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_a_mistake_is_one_line_and_exit_2(module, which, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = COMMANDS[module][which == "bad value"]
    code, out, err = run_main(module, argv, capsys)
    print(err)
    assert code == 2, (out, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("rnnlab: error: ")
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no work: nothing written, no store created


def test_a_real_process_exits_2_with_one_line(tmp_path):
    done = run_cli(["lenght=9", "run_id=abcdef"], cwd=tmp_path, module="rnnlab.sample")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (
        "rnnlab: error: lenght is not a key of rnnlab.sample; did you mean length?"
    )


def test_every_command_module_is_listed():
    """A new command joins the tests above, so its keys get the same checks."""
    package = Path(rnnlab.__file__).parent
    found = {
        ".".join(p.relative_to(package.parent).with_suffix("").parts)
        for p in package.rglob("*.py")
        if "cli.main(COMMAND" in p.read_text(encoding="utf-8")
    }
    assert found == set(COMMANDS)


def test_a_bad_command_line_costs_no_mlflow_import(tmp_path):
    """The check before any work is cheap: a typo on the training command's line is refused
    before MLflow (seconds of imports) or a store is touched."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['rnnlab.run', 'hidden_size=0']\n"
        "try:\n    runpy.run_module('rnnlab.run', run_name='__main__')\n"
        "except SystemExit as e:\n    print(e.code, 'mlflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.stdout.split() == ["2", "False"], done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def runnable_modules() -> set[str]:
    """Modules ``python -m`` can run: a ``__main__`` block, or a package's ``__main__.py``."""
    package = Path(rnnlab.__file__).parent
    found = set()
    for p in package.rglob("*.py"):
        name = ".".join(p.relative_to(package.parent).with_suffix("").parts)
        if p.name == "__main__.py":
            found.add(name.removesuffix(".__main__"))
        elif 'if __name__ == "__main__":' in p.read_text(encoding="utf-8"):
            found.add(name)
    return found


def test_no_module_but_a_command_runs_with_python_m(tmp_path):
    """``python -m rnnlab.export`` once exited 0 and wrote nothing (it had no entry point):
    every module that is not a command now refuses in one line, exit 2, before any work."""
    assert set(rnnlab.COMMANDS) == runnable_modules()
    package = Path(rnnlab.__file__).parent
    modules = {".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(
        ".__init__") for p in package.rglob("*.py")}  # fmt: skip
    for name in sorted(modules):
        line = rnnlab.refusal(name)
        assert (line is None) == (name in rnnlab.COMMANDS), name
    assert rnnlab.module_being_run(["python", "-X", "importtime", "-m", "rnnlab.x", "a=1"]) == (
        "rnnlab.x"
    )
    for name in ("rnnlab", "rnnlab.config", "rnnlab.training.loop"):
        done = run_cli(["out=x.npz"], cwd=tmp_path, module=name)
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert done.stderr.startswith(f"rnnlab: error: python -m {name} is not a command;")
        assert len(done.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
