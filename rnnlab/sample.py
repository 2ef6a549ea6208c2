"""``python -m rnnlab.sample``: text from a char-RNN run, or a sum from an adder run.

    python -m rnnlab.sample run_id=<id> prime="One morning" temperature=0.8 length=500 seed=1
    python -m rnnlab.sample checkpoint=outputs/.../iter_0100000.npz length=100
    python -m rnnlab.sample run_id=<id> a=77 b=41          # adder: the sum, bit by bit
    python -m rnnlab.sample run_id=<id> top_k=5 top_p=0.9 | greedy=true | beam=8 model_from=last

Only the checkpoint is needed (its weights, vocabulary and config): not the corpus, not the
machine that trained it. ``run_id`` reads the run's best checkpoint (``model_from=best``, the
run's own setting by default) or its newest one (``model_from=last``) from the tracking URI
(``tracking_uri=``, else $MLFLOW_TRACKING_URI, else ./mlflow.db, as ``rnnlab.run``). The same
``seed`` gives the same text. Mistakes cost one line on stderr and exit code 2.
"""

from __future__ import annotations

import math
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab import evaluate, quiet
from rnnlab.config import Config
from rnnlab.engine import decode, rnn
from rnnlab.tasks.adder import from_bits, to_bits
from rnnlab.tasks.charrnn import PrimeError, Vocabulary
from rnnlab.training import checkpoint


class SampleError(ValueError):
    """A sampling request cannot be served. The message is one line."""


@dataclass
class Weights:
    """What sampling needs from a checkpoint: the parameters, the config, the vocabulary."""

    params: rnn.Params
    cfg: Config
    vocab: Vocabulary | None  # None for the adder
    iteration: int
    source: str
    burn_in: np.ndarray | None = None  # the run's warm-up text for val/loss_warm (ids)
    warm_start: np.ndarray | None = None  # the state that burn-in starts from (L, S, 1, H)


def load_weights(path: Path, source: str | None = None) -> Weights:
    """Weights from a checkpoint (or the model's weights file): SampleError for anything else."""
    try:
        ck = checkpoint.Checkpoint.read(Path(path))
        if "config" not in ck.meta:
            raise SampleError(f"{path} is a checkpoint without weights or config")
        cfg = ck.config()
        names = rnn.param_shapes(1, cfg.hidden_size, 1, rnn.spec_of(cfg))  # which cell, how deep
        if any(k not in ck.params for k in names):
            raise SampleError(f"{path} is a checkpoint without weights or config")
    except checkpoint.CheckpointError as e:
        raise SampleError(str(e)) from None
    vocab = None
    if cfg.task.name == "charrnn":
        if ck.vocab is None:
            raise SampleError(f"{path} is a char-RNN checkpoint without its vocabulary")
        vocab = Vocabulary(ck.vocab)
    params = {k: ck.params[k] for k in names}
    burn_in, start = ck.extra.get("eval/burn_in"), ck.extra.get("eval/warm_start")
    return Weights(params, cfg, vocab, ck.iteration, source or str(path), burn_in, start)


def generate_text(
    w: Weights,
    prime: str,
    length: int,
    temperature: float,
    rng: np.random.Generator,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    beam: int = 0,
) -> str:
    """``prime`` followed by ``length`` decoded characters — what ``CharTask.generate`` draws
    with the same rng and options, without needing the corpus."""
    if w.vocab is None:
        raise SampleError(f"{w.source} is a {w.cfg.task.name} model, not a char-RNN")
    check_request(length=length, temperature=temperature)
    if (bad := decode.problem(top_k, top_p, greedy, beam)) is not None:
        raise SampleError(f"{bad[0]}={bad[1]} is not allowed: {bad[2]}")
    if not prime:
        raise SampleError("prime must have at least one character")
    try:
        ids = w.vocab.encode(prime, what=f"prime {prime!r}")
    except PrimeError as e:
        raise SampleError(str(e)) from None
    spec = rnn.spec_of(w.cfg)
    opts = decode.Options(temperature, top_k, top_p, greedy, beam)
    step = decode.engine_step(w.params, spec)
    drawn = decode.continue_text(step, evaluate.zero_state(w.params, spec), ids, length, opts, rng)
    return prime + w.vocab.decode(drawn)


# Logits over a temperature below this can overflow to inf, and the softmax becomes NaN.
MIN_TEMPERATURE = 1e-3


def check_request(
    length: int | None = None, temperature: float | None = None, seed: int | None = None
) -> None:
    if length is not None and length < 1:
        raise SampleError(f"length={length} is not allowed: an integer ≥ 1")
    if temperature is not None and not (
        math.isfinite(temperature) and temperature >= MIN_TEMPERATURE
    ):
        raise SampleError(
            f"temperature={temperature} is not allowed: a finite number ≥ {MIN_TEMPERATURE}"
        )
    if seed is not None and seed < 0:
        raise SampleError(f"seed={seed} is not allowed: an integer ≥ 0")


def default_prime(w: Weights) -> str:
    """The run's own prime, else a space (else the vocabulary's first character)."""
    assert w.vocab is not None
    if w.cfg.prime and all(c in w.vocab.index for c in w.cfg.prime):
        return w.cfg.prime
    return " " if " " in w.vocab.index else w.vocab.chars[0]


def add_bit_by_bit(w: Weights, a: int, b: int) -> tuple[int, list[str]]:
    """The adder's predicted a + b and one line per bit (least significant first)."""
    if w.vocab is not None:
        raise SampleError(f"{w.source} is a char-RNN model; a= and b= are for adder runs")
    bits = w.cfg.seq_length
    high = 2 ** (bits - 1)
    for name, v in (("a", a), ("b", b)):
        if not 0 <= v < high:
            raise SampleError(
                f"{name}={v} is not allowed: this {bits}-bit adder adds 0 ≤ a, b < {high}"
            )
    ops = np.array([a, b], dtype=np.int64)
    dtype = w.params["Why"].dtype
    spec = rnn.spec_of(w.cfg)
    xs = to_bits(ops, bits)[:, None, :].astype(dtype)  # (bits, 1, 2): one bit of each per step
    h0 = rnn.zero_state(spec, 1, dtype)
    z = rnn.forward(w.params, xs, h0, spec).logits[:, 0, 0].astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-z))  # P(sum bit = 1), (bits,)
    pred_bits = (z > 0.0).astype(np.int64)  # sigmoid(z) > ½  ⇔  z > 0, as AdderTask.predict
    pred = int(from_bits(pred_bits[:, None])[0])
    true_bits = to_bits(np.array([a + b]), bits)[:, 0]
    lines = [f"{'bit':>3}  a b  P(1)   predicted  true"]
    for t in range(bits):
        mark = "" if pred_bits[t] == true_bits[t] else "  ✗"
        lines.append(
            f"{t:>3}  {int(xs[t, 0, 0])} {int(xs[t, 0, 1])}  {p[t]:.3f}  {pred_bits[t]:>9}"
            f"  {true_bits[t]:>4}{mark}"
        )
    verdict = "right" if pred == a + b else f"wrong, {a} + {b} = {a + b}"
    lines.append(f"{a} + {b} = {pred}   ({pred:0{bits}b}; {verdict})")
    return pred, lines


# --- the command line ----------------------------------------------------------------------------

KEYS = {
    "run_id": "an MLflow run id",
    "checkpoint": "a checkpoint .npz file",
    "tracking_uri": "where run_id lives",
    "prime": "text fed in first",
    "length": "characters to draw",
    "temperature": "> 0; < 1 sharper",
    "seed": "seeds the draws",
    "a": "adder operand",
    "b": "adder operand",
    "top_k": "draw among the k likeliest (0 = all)",
    "top_p": "nucleus mass in (0, 1]",
    "greedy": "true: always the likeliest",
    "beam": "beam search width (0 = sample)",
    "model_from": "best | last (run_id only)",
}
USAGE = (
    "usage: python -m rnnlab.sample (run_id=<id> | checkpoint=<path>) [tracking_uri=<uri>] "
    '[prime="text"] [length=N] [temperature=T] [seed=S] [top_k=K] [top_p=P] [greedy=true] '
    "[beam=W] [model_from=best|last]  |  ... a=<int> b=<int>"
)


def parse_args(argv: list[str], keys: dict[str, str] = KEYS) -> dict[str, str]:
    """``key=value`` arguments among ``keys`` (rnnlab.score passes its own), with exactly one of
    run_id= and checkpoint=; SampleError (one line) otherwise."""
    args: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in keys:
            raise SampleError(f"{arg!r} is not one of {', '.join(k + '=' for k in keys)}")
        args[key] = value
    if ("run_id" in args) == ("checkpoint" in args):
        raise SampleError("give exactly one of run_id=<id> or checkpoint=<path>")
    return args


def _number(args: dict[str, str], key: str, kind, default):
    if key not in args:
        return default
    try:
        return kind(args[key])
    except ValueError:
        raise SampleError(
            f"{key}={args[key]!r} is not a{'n integer' if kind is int else ' number'}"
        ) from None


def boolean(args: dict[str, str], key: str) -> bool:
    value = args.get(key, "false").lower()
    if value not in ("true", "false"):
        raise SampleError(f"{key}={args[key]!r} is not allowed: true or false")
    return value == "true"


def model_from(args: dict[str, str]) -> str | None:
    """``model_from=``: best | last, or None (the run's own setting)."""
    value = args.get("model_from")
    if value is not None and value not in ("best", "last"):
        raise SampleError(f"model_from={value!r} is not allowed: best or last")
    return value


def fetch_weights(client, run, dest: Path, which: str | None) -> Path:
    """The run's ``checkpoints/best.npz`` (which = best; None: the run's ``model_from``
    param, best when absent) when it has one, else its newest checkpoint."""
    from rnnlab.tracking.store import CHECKPOINT_DIR, fetch_checkpoint, quiet_artifact_transfers

    which = which or run.data.params.get("model_from", "best")
    if which == "best":
        names = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, CHECKPOINT_DIR)}
        if evaluate.BEST_FILE in names:
            dest.mkdir(parents=True, exist_ok=True)
            with quiet_artifact_transfers():
                return Path(client.download_artifacts(
                    run.info.run_id, f"{CHECKPOINT_DIR}/{evaluate.BEST_FILE}", str(dest)
                ))  # fmt: skip
    return fetch_checkpoint(client, run, dest)


def resolve_weights(args: dict[str, str], workdir: Path) -> Weights:
    """Weights from ``checkpoint=``, or from ``run_id=``'s best or newest checkpoint."""
    from rnnlab.tracking.store import StoreError, default_uri, get_run, open_store

    if "checkpoint" in args:
        return load_weights(Path(args["checkpoint"]).expanduser())
    uri = default_uri(args.get("tracking_uri") or None)
    run_id = args["run_id"]
    try:
        client = open_store(uri)
        run = get_run(client, run_id, uri)
        path = fetch_weights(client, run, workdir, model_from(args))
    except StoreError as e:
        raise SampleError(str(e)) from None
    return load_weights(path, source=f"run {run_id} ({Path(path).name})")


def main(argv: list[str]) -> str:
    """What the CLI prints, or SampleError."""
    args = parse_args(argv)
    length = _number(args, "length", int, None)
    temperature = _number(args, "temperature", float, None)
    seed = _number(args, "seed", int, 0)
    a, b = _number(args, "a", int, None), _number(args, "b", int, None)
    given = {  # decoding options given on the command line; the others are the run's own
        "top_k": _number(args, "top_k", int, None),
        "top_p": _number(args, "top_p", float, None),
        "greedy": boolean(args, "greedy") if "greedy" in args else None,
        "beam": _number(args, "beam", int, None),
    }
    given = {k: v for k, v in given.items() if v is not None}
    check_request(length, temperature, seed)  # before any download
    model_from(args)
    neutral = {"top_k": 0, "top_p": 1.0, "greedy": False, "beam": 0}
    if (bad := decode.problem(**(neutral | given))) is not None:
        raise SampleError(f"{bad[0]}={bad[1]} is not allowed: {bad[2]}")
    with tempfile.TemporaryDirectory(prefix="rnnlab-sample-") as tmp:
        w = resolve_weights(args, Path(tmp))
    if w.cfg.task.name == "adder" or a is not None or b is not None:
        if a is None or b is None:
            raise SampleError(f"{w.source} is an adder: give both a=<int> and b=<int>")
        _, lines = add_bit_by_bit(w, a, b)
        return "\n".join(lines)
    prime = args["prime"] if "prime" in args else default_prime(w)
    return generate_text(
        w,
        prime,
        length if length is not None else w.cfg.sample_length,
        temperature if temperature is not None else w.cfg.temperature,
        np.random.default_rng(seed),
        **decoding(w.cfg, given),
    )


def decoding(cfg: Config, given: dict) -> dict:
    """The run's decoding options (its training-time samples') with ``given`` on top; when the
    command line picks a mode (beam, greedy, top_k/top_p) the run's other mode is dropped."""
    run = {"top_k": cfg.top_k, "top_p": cfg.top_p, "greedy": cfg.greedy, "beam": cfg.beam}
    if given:
        run = {"top_k": 0, "top_p": 1.0, "greedy": False, "beam": 0}
    return run | given


def cli() -> None:
    _, examples, *rest = __doc__.split("\n\n")
    help_text = "\n\n".join([USAGE, textwrap.dedent(examples).strip(), *rest]).strip()
    quiet.key_value_cli(main, help_text, SampleError)


if __name__ == "__main__":
    cli()
