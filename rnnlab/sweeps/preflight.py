"""Check a command line before Hydra runs any job.

Every value a sweep names is composed and checked: a sweep over ``hidden_size=50,0`` fails before
the first job starts, not after it. Errors become one line naming the key, the value and what is
allowed (``UserError``); the CLI prints it and exits 2.
"""

from __future__ import annotations

import difflib
import re

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from rnnlab.config import Config, flatten, flatten_dict
from rnnlab.errors import UserError
from rnnlab.sweeps.compose import register_configs, to_config
from rnnlab.tasks import check  # the shared keys, then the task's own
from rnnlab.tasks.charrnn import PrimeError, load_corpus
from rnnlab.tasks.corpus import CorpusError
from rnnlab.training import memory


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text))


def _explain(exc: BaseException, override_by_key: dict[str, str]) -> str:
    """One line for a composition failure."""
    if isinstance(exc, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^']+)'", str(exc))
        if m and exc.options:
            group, value = m.groups()
            return f"{group}={value} is not allowed: one of {', '.join(sorted(exc.options))}"
        return _first_line(exc)
    if isinstance(exc, OverrideParseException):
        return f"cannot parse the override: {_first_line(exc)} (see `python -m rnnlab.run --help`)"
    cause = exc.__cause__ or exc
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        key = getattr(cause, "full_key", None) or "?"
        known = list(flatten(Config()))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}?" if close else "see `python -m rnnlab.run --cfg job`"
        return f"{key} is not a config key; {hint}"
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        shown = override_by_key.get(key or "", key or "?")
        return f"{shown}: {_first_line(getattr(cause, 'msg', None) or cause)}"
    return _first_line(exc)


def without_hydra(composed: DictConfig) -> DictConfig:
    """The job's config with its ``hydra`` node set as Hydra's runtime config (what
    ``${hydra:...}`` interpolations read, as in a real run) and then taken out."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    HydraConfig.instance().set_config(composed)
    with open_dict(composed):
        del composed["hydra"]
    return composed


def check_keys(composed: DictConfig, override_by_key: dict[str, str]) -> None:
    """The composed config has exactly the schema's keys: ``+foo=1`` cannot append an unknown
    key (the schema would silently drop it) and ``~hidden_size`` cannot delete a needed one."""
    known = set(flatten(Config()))
    present = set(flatten_dict(OmegaConf.to_container(composed, resolve=False)))
    for key in sorted(present - known):
        shown = override_by_key.get(key, key)
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else "see `python -m rnnlab.run --cfg job`"
        raise UserError(f"{shown}: {key} is not a config key; {hint}")
    for key in sorted(known - present):
        raise UserError(f"~{key}: {key} cannot be removed; set a value instead")


def expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Override lists that between them use every value of every sweep at least once."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    base, sweeps = [], []
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            if not multirun:
                raise UserError(f"{o.input_line} sweeps several values: add -m to run one job each")
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # e.g. interval(0, 1) for a search: checked per trial instead
                values = []
            key = o.get_key_element()
            sweeps.append((i, [f"{key}={v}" for v in values]))
            base.append(f"{key}={values[0]}" if values else None)
        else:
            base.append(o.input_line)
    variants = [[b for b in base if b is not None]]
    for i, lines in sweeps:
        for line in lines[1:]:
            variant = list(base)
            variant[i] = line
            variants.append([v for v in variant if v is not None])
    return variants


def check_memory(cfg: Config, text: str | None) -> None:
    """Refuse a run whose estimated peak memory cannot fit (``rnnlab.training.memory``), before
    it allocates anything."""
    memory.check(cfg, memory.Corpus.of(text) if text is not None else None)


def check_experiment(cfg: Config) -> None:
    """The experiment name fits MLflow, and is not a deleted experiment of a SQLite store
    (read-only SQL: no MLflow import, no store created)."""
    import sqlite3

    from rnnlab.tracking import store
    from rnnlab.tracking.names import check_experiment_name

    try:
        check_experiment_name(cfg.experiment_name)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not cfg.tracking.enabled:
        return
    path = store.sqlite_path(store.resolve_uri(cfg.tracking.uri))
    if path is None or not path.is_file():
        return
    name = cfg.experiment_name or cfg.task.name
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            row = con.execute(
                "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?", (name,)
            ).fetchone()
    except sqlite3.Error:
        return  # not a store yet, or locked: MLflow says more when it opens it
    if row and row[1] == "deleted":
        raise UserError(
            f"experiment_name={name!r} is a deleted experiment in {path}: restore it "
            f"(mlflow experiments restore --experiment-id {row[0]}) or choose another name"
        )


def _preflight_resume(cfg: Config, overrides: list[str], multirun: bool) -> None:
    # imported here: rnnlab.tracking.resume needs MLflow, whose import costs seconds that a plain
    # command line with a typo should not pay
    from rnnlab.tracking.resume import ResumeError, preflight_resume

    try:
        preflight_resume(cfg, overrides, multirun=multirun)
    except ResumeError as e:
        raise UserError(str(e)) from None


def study_params(config_name: str, first: list[str], overrides: list[str]) -> list[str]:
    """The basic sweeper's ``params`` a config file sets (a study's grid, e.g.
    conf/study/memory_horizon.yaml) as overrides, leaving out the keys the command line sets
    (Hydra's basic sweeper lets those win); [] when the file sets none or another sweeper runs.
    ``first``: one variant of the command line, to compose with."""
    try:
        composed = compose(config_name=config_name, overrides=first, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError):
        return []  # the variant loop below names the problem
    sweeper = composed.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return []
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    params = sweeper.get("params") or {}
    return [f"{k}={v}" for k, v in params.items() if str(k) not in given]


def preflight(config_dir: str, config_name: str, argv: list[str]) -> None:
    """Raise UserError (a ConfigError among them) for the first bad value on this command line."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return
    if getattr(args, "experimental_rerun", None):
        return
    try:
        variants = expand(args.overrides, args.multirun)
    except OverrideParseException as e:
        raise UserError(_explain(e, {})) from None
    GlobalHydra.instance().clear()
    try:
        register_configs()  # the schema config.yaml extends
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            name = args.config_name or config_name
            grid = study_params(name, variants[0], args.overrides) if args.multirun else []
            if grid:  # a study's grid (+study=...): its values are checked like the command's
                try:
                    variants = expand(grid + args.overrides, True)
                except OverrideParseException as e:
                    raise UserError(_explain(e, {})) from None
            for overrides in variants:
                by_key = {o.split("=", 1)[0].lstrip("+~"): o for o in overrides}
                try:
                    composed = compose(config_name=name, overrides=overrides,
                                       return_hydra_config=True)  # fmt: skip
                    composed = without_hydra(composed)  # ${hydra:runtime.cwd} resolves
                    check_keys(composed, by_key)
                    cfg = to_config(composed)
                except (HydraException, OmegaConfBaseException, ValueError) as e:
                    raise UserError(_explain(e, by_key)) from None
                if cfg.data.name == "file" and not cfg.data.path:
                    raise UserError("data=file needs data.path: data.path=/path/to/any/utf8.txt")
                try:
                    if (
                        cfg.resume
                    ):  # the checkpoint's config + these overrides: rnnlab.tracking.resume
                        _preflight_resume(cfg, overrides, args.multirun)
                    else:
                        check(cfg)
                        check_experiment(cfg)
                        text = load_corpus(cfg)[0] if cfg.task.name == "charrnn" else None
                        check_memory(cfg, text)
                except CorpusError as e:  # name the key, as every other message does
                    msg = str(e)
                    if not msg.startswith("data."):
                        key = "data.path" if cfg.data.path else "data.name"
                        msg = f"{key}={getattr(cfg.data, key[5:])!r}: {msg}"
                    raise UserError(msg) from None
                except PrimeError as e:
                    raise UserError(str(e)) from None
    finally:
        GlobalHydra.instance().clear()
