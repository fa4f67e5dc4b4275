"""The models of an unlearning report: checkpoints, seeds, training stages, wall times and oracle-stop labels.

The cost of a model is its training wall time; a reference's may instead be its iterations × a step time measured
beside the methods (:func:`retraining_time`), so that both sides of the cost ratio are timed on one machine.

A model spec on the command line is a checkpoint ``.pth`` or an experiment folder (``experiments/<name>``, whose
``models/net_g_latest.pth`` is used); ``+`` joins the stages of a multi-stage method (wall times add up, the last
stage's checkpoint is scored); ``,`` separates the seeds of one method (every figure is then mean ± std over them).

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for run in ('ga_s0', 'ga_s1'):
    ...     (root / run / 'models').mkdir(parents=True)
    ...     (root / run / 'models' / 'net_g_latest.pth').touch()
    >>> runs = resolve_runs('ga_adv', 'method', f'{root}/ga_s0,{root}/ga_s1', '--method ga_adv')
    >>> [r.seed for r in runs], runs[1].checkpoint.parent.parent.name, runs[0].oracle_stop
    ([0, 1], 'ga_s1', False)
"""
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROLES = ('original', 'reference', 'method')


@dataclass
class ModelSpec:
    """One run of a model of the report: its checkpoint, the ``train_log.json`` of every stage, its seed index."""

    name: str
    role: str
    checkpoint: Path
    train_logs: list[Path] = field(default_factory=list)
    stages: int = 1
    seed: int = 0
    oracle_stop: bool = False


def read_train_log(path: str | os.PathLike) -> dict:
    """Load an AllInOneModel ``train_log.json`` (``wall_time_s``, ``iter``, ``loss``, ``val``), checking its keys."""
    log = json.loads(Path(path).read_text())
    if not isinstance(log, dict) or not isinstance(log.get('wall_time_s'), (int, float)):
        raise ValueError(f'{path}: expected a JSON object with a numeric "wall_time_s"; got keys '
                         f'{sorted(log) if isinstance(log, dict) else type(log).__name__}')
    return log


def _saved_options(folder: Path) -> list[dict]:
    """The option YAMLs BasicSR copied into an experiment folder (merged options, see ``config.parse_options``)."""
    options = []
    for path in sorted(folder.glob('*.yml')):
        opt = yaml.safe_load(path.read_text())
        if isinstance(opt, dict):
            options.append(opt)
    return options


def used_oracle_stop(folder: Path) -> bool:
    """Whether the run in ``folder`` was stopped by looking at a retrained reference.

    Its ``train_log.json`` says so when the stop criterion labelled it (``stop: {type, oracle, label}``); otherwise its
    saved options are read: a ``train.stop`` of type ``OracleStop`` or naming a ``reference`` checkpoint.
    """
    log_path = folder / 'train_log.json'
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    stop = log.get('stop')
    if isinstance(stop, dict) and 'oracle' in stop:
        return bool(stop['oracle'])
    options = [opt.get('train') or {} for opt in _saved_options(folder)]
    # kept for runs older than train.stop: the legacy train.stop_rule always stopped on a reference's PSNR
    if 'stop_rule' in log or any(train.get('stop_rule') for train in options):
        return True
    return any(isinstance(train.get('stop'), dict) and (train['stop'].get('type') == 'OracleStop'
                                                        or train['stop'].get('reference')) for train in options)


def resolve_model(name: str, role: str, spec: str, where: str, seed: int = 0) -> ModelSpec:
    """Turn one command-line run (stages joined with ``+``) into a checkpoint, its training logs and labels.

    Args:
        name: the model's name in the report.
        role: ``'original'``, ``'reference'`` or ``'method'``.
        spec: a checkpoint file or an experiment folder, or several stages joined with ``+``.
        where: the command-line flag, named in errors.
        seed: index of this run among the seeds of ``name``.

    Returns:
        A :class:`ModelSpec`; stages without ``train_log.json`` are left out of ``train_logs``.
    """
    if role not in ROLES:
        raise ValueError(f'{where}: role must be one of {", ".join(ROLES)}; got {role!r}')
    parts = [Path(p) for p in spec.split('+') if p]
    if not parts:
        raise ValueError(f'{where}: empty model spec; expected a checkpoint .pth or an experiment folder')
    folders = [part if part.is_dir() else part.parent.parent if part.parent.name == 'models' else None
               for part in parts]
    logs = [f / 'train_log.json' for f in folders if f is not None and (f / 'train_log.json').is_file()]
    checkpoint = parts[-1] / 'models' / 'net_g_latest.pth' if parts[-1].is_dir() else parts[-1]
    if not checkpoint.is_file():
        raise FileNotFoundError(f'{where} {name}: checkpoint {checkpoint} does not exist; expected a .pth file or an '
                                'experiment folder holding models/net_g_latest.pth')
    oracle = any(used_oracle_stop(f) for f in folders if f is not None)
    return ModelSpec(name, role, checkpoint, logs, len(parts), seed, oracle)


def resolve_runs(name: str, role: str, text: str, where: str) -> list[ModelSpec]:
    """The seeds of one model: ``text`` holds runs separated by ``,`` (each as :func:`resolve_model` takes)."""
    runs = [run for run in text.split(',') if run]
    if not runs:
        raise ValueError(f'{where}: no run given; expected PATH[,PATH...] (one per seed)')
    return [resolve_model(name, role, run, where, seed) for seed, run in enumerate(runs)]


def plateau_gain(log: dict, tail: float = 0.25) -> float | None:
    """Mean validation-PSNR gain (dB) over the last ``tail`` of training; near 0 means the run reached a plateau."""
    val = log.get('val') or []
    if len(val) < 2:
        return None
    last_iter = val[-1][0]
    start = next(entry for entry in val if entry[0] >= last_iter * (1 - tail))
    if start is val[-1]:
        start = val[-2]
    gains = [val[-1][1][d]['psnr'] - start[1][d]['psnr'] for d in val[-1][1] if d in start[1]]
    return float(sum(gains) / len(gains)) if gains else None


def training_curves(specs: list[ModelSpec]) -> dict[str, dict]:
    """Training loss and validation PSNR curves of the original and the references, from their ``train_log.json``.

    Returns:
        ``{model name: train_log dict}`` for the original and reference specs that have a log.
    """
    return {s.name: read_train_log(s.train_logs[-1]) for s in specs
            if s.role in ('original', 'reference') and s.train_logs}


def _stage_total(spec: ModelSpec, key: str) -> float | None:
    """The sum of ``key`` over the ``train_log.json`` of every stage, or ``None`` when a stage has no log."""
    if len(spec.train_logs) != spec.stages:
        return None
    return float(sum(read_train_log(p)[key] for p in spec.train_logs))


def wall_time(spec: ModelSpec) -> float | None:
    """Total training seconds over all stages of a model, or ``None`` when a stage has no training log."""
    return _stage_total(spec, 'wall_time_s')


def measured_step_time(folder: str | os.PathLike, where: str) -> float:
    """The median seconds per iteration (``step_time_s`` of its ``train_log.json``) of the run in ``folder``."""
    path = Path(folder) / 'train_log.json'
    if not path.is_file():
        raise FileNotFoundError(f'{where}: {path} does not exist; expected the experiment folder of a short training '
                                'run (tools/train.py) made on this machine')
    step = read_train_log(path).get('step_time_s')
    if not isinstance(step, (int, float)) or step <= 0:
        raise ValueError(f'{where}: {path}: expected a positive "step_time_s" (AllInOneModel writes it after two '
                         f'iterations); got {step!r}')
    return float(step)


def retraining_time(spec: ModelSpec, step_time_s: float) -> float | None:
    """Seconds the training of ``spec`` takes at ``step_time_s`` per iteration (its iterations over all stages), or
    ``None`` when a stage has no training log."""
    iters = _stage_total(spec, 'iter')
    return None if iters is None else step_time_s * iters
