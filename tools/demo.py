"""The whole product on one machine: demo data, the original and retrained models, every unlearning method (haze and
rain forgotten, 3 seeds each), the ASVP study, and `results/demo/REPORT.md`.

Usage:
    python tools/demo.py                # reuse finished stages whose merged options did not change
    python tools/demo.py --fresh        # run every stage again
    python tools/demo.py --fresh-base   # train the base models here (again) instead of installing the shipped ones
    python tools/demo.py --build-base   # train the base models, write them to checkpoints/demo/, stop

Each stage is a real command (`tools/train.py`, `tools/unlearn_report.py`, ...) run in a subprocess with the
repository root as working directory. A stage is skipped when its stamp in `results/demo/stages/` carries the same
key (a hash of the command line and of the fully merged options of every YAML it reads, `_base_` resolved) and no
stage it needs ran in this run; `--fresh` runs every stage again, `--fresh-base` the base models and all after them.

Base models: the original and, per forgotten type, the retrained-without-X reference at 2 seeds (their gap on X is
the noise floor of "indistinguishable from retraining"). A base model listed in `checkpoints/demo/manifest.json` is
installed into `experiments/<name>/` instead of trained (still after the `data` stage, which every later stage
reads), after checking the checkpoint's sha256 and that its training YAML (with the seed overrides) still merges to
the options it was trained from. Every unlearning method runs with seeds 0, 1, 2: seed 0 is its YAML as it is, seed k
adds `--force_yml manual_seed=k datasets:train:seed=k name=<name>_seed<k>`.

Cost: per forgotten type a short run of the reference's training YAML (`step_time_wo_<type>`, 50 iterations) runs
beside the other stages; the report times retraining as the reference's iterations x that run's median step, so that
both sides of the cost ratio are measured in this run, also when the references were installed.
"""
import argparse
import copy
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

import torch

import basicsr_unlearn  # noqa: F401  (torchvision alias before basicsr)
from basicsr_unlearn.config import apply_force_yml, load_options
from basicsr_unlearn.fileio import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
OUT = Path('results/demo')
SHIPPED = Path('checkpoints/demo')
ARCH = 'promptir-tiny'
FORGET_TYPES = ('haze', 'rain')
UNLEARN_DATA = {'haze': 'demo3', 'rain': 'demo3-forget-rain'}  # option files unlearn_<ARCH>_<data>_<stem>_*.yml
REFERENCE_SEEDS = (0, 1)
METHOD_SEEDS = (0, 1, 2)
STEP_TIME_ITERS = 50  # iterations of the runs that time a retraining step beside the methods
PLATEAU_MAX_DB = 0.2  # a base model is at a plateau when twice its iterations move no val PSNR by more than this
UNLEARN_METHODS = {  # report name -> its training stages (option file stems), run in order, each stage once
    'ga_adv': ['ga-adv'],
    'ga_adv_oracle_stop': ['ga-adv-oracle'],  # the same run stopped by the retrained model: labelled, for comparison
    'ga': ['ga'],
    'neggrad_plus': ['neggrad-plus'],
    'finetune': ['finetune'],
    'identity_target': ['identity-target'],
    'scrub': ['scrub'],
    'adapt_then_unlearn': ['adapt-stage1', 'adapt-then-unlearn'],
    'task_vector': ['adapt-stage1', 'task-vector'],
    'salun': ['salun'],
}


@dataclass
class Stage:
    """One demo step: a command (or an in-process action), the option files it reads, the paths it must leave
    behind, the stages it needs, and any extra text its key depends on (a shipped checkpoint's sha256)."""

    name: str
    cmd: list[str]
    options: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    action: Callable[[], None] | None = None
    stamp: str = ''

    def key(self, needed_keys: list[str]) -> str:
        """Hash of the command, the merged options, the stamp and the keys of the stages it needs."""
        merged = [merged_options(p) for p in self.options]
        blob = json.dumps({'cmd': self.cmd, 'options': merged, 'needs': needed_keys, 'stamp': self.stamp},
                          sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()

    @property
    def run_dir(self) -> Path:
        """`experiments/<run name>` of a training stage (the folder of its first output)."""
        return self.outputs[0].parents[1]


@cache
def _merged(path: Path) -> dict:
    return load_options(str(path))


def merged_options(path: Path) -> dict:
    """The fully merged options of an option file (parsed once per run; a copy the caller may change)."""
    return copy.deepcopy(_merged(path))


def find_option(folder: str, stem: str) -> Path:
    """The unique option file `options/<folder>/<stem>[_<schedule>].yml`."""
    folder_path = ROOT / 'options' / folder
    hits = sorted(folder_path.glob(f'{stem}_*.yml')) + sorted(folder_path.glob(f'{stem}.yml'))
    if len(hits) != 1:
        raise FileNotFoundError(f'options/{folder}/{stem}*.yml: expected exactly one file, found {hits or "none"}')
    return hits[0]


def seeded(name: str, seed: int) -> tuple[str, list[str]]:
    """Run name and `--force_yml` overrides of seed `seed` of the run `name` (seed 0: the YAML as it is).

    >>> seeded('train_x', 1)
    ('train_x_seed1', ['manual_seed=1', 'datasets:train:seed=1', 'name=train_x_seed1'])
    """
    if seed == 0:
        return name, []
    run = f'{name}_seed{seed}'
    return run, [f'manual_seed={seed}', f'datasets:train:seed={seed}', f'name={run}']


def train_stage(name: str, option_file: Path, needs: list[str], seed: int = 0, overrides: tuple[str, ...] = ()
                ) -> Stage:
    """`tools/train.py` on `option_file` at `seed`, with extra `--force_yml` overrides."""
    run, force = seeded(merged_options(option_file)['name'], seed)
    force += overrides
    cmd = [sys.executable, 'tools/train.py', '-opt', str(option_file.relative_to(ROOT))]
    return Stage(name, cmd + (['--force_yml', *force] if force else []), [option_file],
                 [Path('experiments') / run / 'models' / 'net_g_latest.pth'], needs)


def reference_stage(forget: str, seed: int) -> str:
    return f'retrain_wo_{forget}' + (f'_seed{seed}' if seed else '')


def reference_option(forget: str) -> Path:
    """The training YAML of the model retrained without `forget`."""
    return find_option('train', f'train_{ARCH}_demo3-wo-{forget}_l1')


def base_runs() -> list[tuple[str, Path, int]]:
    """`(stage name, training option file, seed)` of every base model: the original, each reference at 2 seeds."""
    runs = [('original', find_option('train', f'train_{ARCH}_demo3_l1'), 0)]
    for forget in FORGET_TYPES:
        option_file = reference_option(forget)
        runs += [(reference_stage(forget, seed), option_file, seed) for seed in REFERENCE_SEEDS]
    return runs


def options_digest(option_file: Path, seed: int) -> str:
    """sha1 of the merged options of a base run (seed overrides applied): what its checkpoint was trained from."""
    opt = merged_options(option_file)
    apply_force_yml(opt, seeded(opt['name'], seed)[1])
    return hashlib.sha1(json.dumps(opt, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path = SHIPPED) -> dict[str, dict]:
    """The shipped base models of `folder/manifest.json`, `{run name: entry}`; `{}` when none is shipped."""
    path = folder / 'manifest.json'
    return json.loads(path.read_text())['models'] if path.is_file() else {}


def check_shipped(folder: Path, run: str, entry: dict, digest: str) -> None:
    """Raise `SystemExit` naming the file when a shipped checkpoint's sha256 or training options do not match."""
    rebuild = 'rebuild the shipped models with `python tools/demo.py --build-base`, or train them in this run ' \
              'with `make demo FRESH=1`'
    ckpt = folder / entry['file']
    if not ckpt.is_file():
        raise SystemExit(f'{ckpt}: listed in {folder / "manifest.json"} for {run} but missing; {rebuild}')
    actual = file_sha256(ckpt)
    if actual != entry['sha256']:
        raise SystemExit(f'{ckpt}: sha256 {actual} does not match {folder / "manifest.json"} ({entry["sha256"]}): '
                         f'the file is corrupt or was replaced (a Git LFS pointer?); {rebuild}')
    if digest != entry['options_sha1']:
        raise SystemExit(f'{folder / "manifest.json"}: {run} was trained from other options than '
                         f'{entry["option"]} (seed {entry["seed"]}) merges to now; {rebuild}')


def install_shipped(folder: Path, run: str, entry: dict) -> None:
    """Copy a shipped base model (checkpoint, train_log.json, training log) into `experiments/<run>/`."""
    target = Path('experiments') / run
    (target / 'models').mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / entry['file'], target / 'models' / 'net_g_latest.pth')
    shutil.copyfile(folder / entry['train_log'], target / 'train_log.json')
    shutil.copyfile(folder / entry['log'], target / Path(entry['log']).name)


def machine() -> str:
    """The CPU, its cores and the CUDA GPU the stages train on (BasicSR's `num_gpu: auto`), if there is one."""
    gpu = f'GPU {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else 'no CUDA GPU'
    return f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {gpu}'


def ship(folder: Path, run_dir: Path, option_file: Path, seed: int) -> dict:
    """Copy a trained base model into `folder` (checkpoint, train_log.json, its newest BasicSR log); returns its
    manifest entry."""
    run = run_dir.name
    logs = sorted(run_dir.glob(f'train_{run}_*.log'), key=os.path.getmtime)
    if not logs:
        raise SystemExit(f'{run_dir}: no BasicSR training log train_{run}_*.log to ship')
    folder.mkdir(parents=True, exist_ok=True)
    files = {'file': f'{run}.pth', 'train_log': f'{run}.train_log.json', 'log': f'{run}.log'}
    for key, source in (('file', run_dir / 'models' / 'net_g_latest.pth'), ('train_log', run_dir / 'train_log.json'),
                        ('log', logs[-1])):
        shutil.copyfile(source, folder / files[key])
    return {**files, 'sha256': file_sha256(folder / files['file']), 'option': str(option_file.relative_to(ROOT)),
            'seed': seed, 'options_sha1': options_digest(option_file, seed),
            'built_on': machine()}


def base_stages(shipped: dict[str, dict], folder: Path = SHIPPED) -> list[Stage]:
    """A training stage per base model, or an install stage where `shipped` (a manifest) lists its run; both need
    `data`, so that every stage after a base model finds `datasets/demo`."""
    stages = []
    for name, option_file, seed in base_runs():
        stage = train_stage(name, option_file, ['data'], seed)
        entry = shipped.get(stage.run_dir.name)
        if entry is not None:
            check_shipped(folder, stage.run_dir.name, entry, options_digest(option_file, seed))
            stage = Stage(name, [], outputs=stage.outputs, needs=stage.needs,
                          action=partial(install_shipped, folder, stage.run_dir.name, entry), stamp=entry['sha256'])
        stages.append(stage)
    return stages


def plateau_stages() -> list[Stage]:
    """The plateau check of the original and of each seed-0 reference: its training YAML run once more from its
    checkpoint (a second cosine cycle of the same length), so that it has trained twice its iterations."""
    stages = []
    for name, option_file, seed in base_runs():
        if seed:
            continue
        base = train_stage(name, option_file, ['data'])
        run = f'{base.run_dir.name}_continued'
        force = [f'name={run}', f'path:pretrain_network_g={base.outputs[0]}']
        stages.append(Stage(f'{name}_continued', [*base.cmd, '--force_yml', *force], [option_file],
                            [Path('experiments') / run / f for f in ('models/net_g_latest.pth', 'train_log.json')],
                            [name]))
    return stages


def final_val_psnr(run_dir: Path) -> tuple[int, dict[str, float]]:
    """`(iteration, {val set: PSNR})` of the last validation in `run_dir/train_log.json`."""
    it, sets = json.loads((run_dir / 'train_log.json').read_text())['val'][-1]
    return it, {name: round(metrics['psnr'], 3) for name, metrics in sets.items()}


def plateau_table(checks: list[Stage]) -> dict[str, dict]:
    """Per checked base model: its final val PSNR, the PSNR after continuing as long again, the largest move and
    whether that is within :data:`PLATEAU_MAX_DB`."""
    table = {}
    for check in checks:
        base_dir = Path('experiments') / check.run_dir.name.removesuffix('_continued')
        (it, before), (more, after) = final_val_psnr(base_dir), final_val_psnr(check.run_dir)
        move = {k: round(after[k] - before[k], 3) for k in before}
        table[base_dir.name] = {'iters': it, 'val_psnr': before, 'continued_iters': it + more,
                                'continued_val_psnr': after, 'move_db': move,
                                'plateau': max(map(abs, move.values())) <= PLATEAU_MAX_DB}
    return table


def unlearn_stages(forget: str) -> tuple[list[Stage], list[str]]:
    """Every unlearning stage forgetting `forget` (each method at :data:`METHOD_SEEDS`) and the report's `--method`
    arguments."""
    stages: dict[str, Stage] = {}
    methods = []
    for method, stems in UNLEARN_METHODS.items():
        runs = []
        for seed in METHOD_SEEDS:
            previous: list[Stage] = []
            for stem in stems:
                name = f'unlearn_{forget}_{stem}_s{seed}'
                if name not in stages:  # every method starts from the original; an oracle variant reads the reference
                    option_file = find_option('unlearn', f'unlearn_{ARCH}_{UNLEARN_DATA[forget]}_{stem}')
                    oracle = [reference_stage(forget, 0)] if 'oracle' in stem else []
                    needs = ['original', *oracle, *(s.name for s in previous)]
                    overrides = adapted_override(option_file, previous[-1], seed) if previous else ()
                    stages[name] = train_stage(name, option_file, needs, seed, overrides)
                previous.append(stages[name])
            runs.append('+'.join(str(s.run_dir) for s in previous))
        methods += ['--method', f'{method}={",".join(runs)}']
    return list(stages.values()), methods


def adapted_override(option_file: Path, previous: Stage, seed: int) -> tuple[str, ...]:
    """A later stage of a multi-stage method reads the previous stage of its own seed (`path.pretrain_network_adapted`;
    seed 0: the path its YAML names, checked)."""
    expected = str(previous.outputs[0])
    named = merged_options(option_file).get('path', {}).get('pretrain_network_adapted')
    if seed == 0:
        if named != expected:
            raise ValueError(f'{option_file.relative_to(ROOT)}: path.pretrain_network_adapted: expected {expected} '
                             f'(the previous stage {previous.name}), got {named!r}')
        return ()
    return (f'path:pretrain_network_adapted={expected}',)


def step_time_stage(forget: str) -> Stage:
    """`STEP_TIME_ITERS` iterations of the reference's training YAML (no validation or checkpoint on the way): its
    median step time, measured beside the methods, times the retraining in the report."""
    option_file = reference_option(forget)
    name = f'step_time_wo_{forget}'
    force = [f'train:total_iter={STEP_TIME_ITERS}', f'name={name}', f'val:val_freq={STEP_TIME_ITERS + 1}',
             f'logger:save_checkpoint_freq={STEP_TIME_ITERS + 1}']
    return Stage(name, [sys.executable, 'tools/train.py', '-opt', str(option_file.relative_to(ROOT)), '--force_yml',
                        *force], [option_file],
                 [Path('experiments') / name / f for f in ('models/net_g_latest.pth', 'train_log.json')],
                 ['data'])


def data_stage() -> Stage:
    return Stage('data', [sys.executable, 'tools/prepare_demo_data.py', '--out', 'datasets/demo', '--lmdb', '--rain',
                          'heavy', '--overwrite'],
                 outputs=[Path('datasets/demo/manifest.json')])


def build_stages(shipped: dict[str, dict] | None = None, folder: Path = SHIPPED) -> list[Stage]:
    """All demo stages with their dependencies, in start order; base models listed in `shipped` (the manifest of
    `folder`) are installed."""
    test_opt = find_option('test', f'test_{ARCH}_demo3')
    study_opt = find_option('distill', f'asvp-study_{ARCH}_demo3')
    stages = [data_stage(), *base_stages(shipped or {}, folder)]
    runs = {s.name: s.run_dir for s in stages[1:]}
    stages += [step_time_stage(forget) for forget in FORGET_TYPES]
    stages.append(Stage('asvp_study', [
        sys.executable, 'tools/asvp_study.py', '--quick', '--opt', str(study_opt.relative_to(ROOT)),
        '--teacher', str(runs['original'] / 'models' / 'net_g_latest.pth'), '--out', str(OUT / 'asvp'),
    ], [study_opt], [OUT / 'asvp' / 'report.md'], ['original']))
    reports = []  # after every unlearning stage of both types, so that the two long reports run side by side
    for forget in FORGET_TYPES:
        unlearning, methods = unlearn_stages(forget)
        references = [reference_stage(forget, seed) for seed in REFERENCE_SEEDS]
        stages += unlearning
        reports.append(Stage(f'unlearn_report_{forget}', [
            sys.executable, 'tools/unlearn_report.py', '--opt', str(test_opt.relative_to(ROOT)),
            '--original', str(runs['original']), *(a for r in references for a in ('--reference', str(runs[r]))),
            '--forget', forget, '--out', str(OUT / f'unlearn_{forget}'), *methods,
            '--retrain-step-time', str(Path('experiments') / f'step_time_wo_{forget}'),
        ], [test_opt], [OUT / f'unlearn_{forget}' / 'report.md'], ['original', *references, f'step_time_wo_{forget}',
                                                                   *(s.name for s in unlearning)]))
    return stages + reports


class Runner:
    """Runs stages as subprocesses, at most `jobs` at once, each single-threaded so wall times compare fairly; a
    stage with an in-process action (installing a shipped checkpoint) runs at once. The stages named in `rerun` run
    whatever their stamps say, and a stage after one that ran runs too."""

    def __init__(self, stages: list[Stage], jobs: int, rerun: Collection[str] = ()):
        self.stages = {s.name: s for s in stages}
        self.jobs, self.rerun = jobs, set(rerun)
        self.seconds: dict[str, float] = {}
        self.running: dict[str, tuple[subprocess.Popen, float]] = {}
        self.ran: set[str] = set()
        self.total = len(stages)
        self.keys: dict[str, str] = {}
        for stage in stages:  # in dependency order: a changed stage invalidates everything after it
            self.keys[stage.name] = stage.key([self.keys[n] for n in stage.needs])

    def up_to_date(self, stage: Stage) -> bool:
        stamp = OUT / 'stages' / f'{stage.name}.json'
        return (stage.name not in self.rerun and not self.ran.intersection(stage.needs) and stamp.is_file()
                and json.loads(stamp.read_text())['key'] == self.keys[stage.name]
                and all(p.exists() for p in stage.outputs))

    def ready(self, pending: list[str]) -> list[str]:
        """The pending stages whose needed stages all finished."""
        return [n for n in pending if all(d in self.seconds for d in self.stages[n].needs)]

    def log(self, name: str, text: str) -> None:
        done = len(self.seconds)
        print(f'[{time.strftime("%H:%M:%S")} {done}/{self.total}] {name}: {text}', flush=True)

    def start(self, stage: Stage) -> None:
        self.ran.add(stage.name)
        if stage.action is not None:
            started = time.time()
            stage.action()
            self.finish(stage.name, 0, started)
            return
        log_path = OUT / 'logs' / f'{stage.name}.log'
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
        with open(log_path, 'w') as log:
            proc = subprocess.Popen(stage.cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.running[stage.name] = (proc, time.time())
        self.log(stage.name, f'started (log: {log_path})')

    def finish(self, name: str, returncode: int, started: float) -> None:
        stage, seconds = self.stages[name], time.time() - started
        log_path = OUT / 'logs' / f'{name}.log'
        if returncode != 0:
            tail = ''.join(log_path.read_text().splitlines(keepends=True)[-25:])
            raise SystemExit(f'{tail}\ndemo stage {name!r} failed (exit {returncode}); full log: {log_path}')
        missing = [str(p) for p in stage.outputs if not p.exists()]
        if missing:
            raise SystemExit(f'demo stage {name!r} finished but did not write {", ".join(missing)}')
        write_json(OUT / 'stages' / f'{name}.json', {'key': self.keys[name], 'seconds': seconds, 'cmd': stage.cmd})
        self.seconds[name] = seconds
        self.log(name, f'done in {seconds:.0f} s')

    def progress(self) -> None:
        """One line per running stage: its latest BasicSR iteration line, if any."""
        for name in self.running:
            lines = [ln for ln in (OUT / 'logs' / f'{name}.log').read_text().splitlines() if 'iter:' in ln]
            if lines:
                self.log(name, lines[-1].split('INFO: ', 1)[-1][:120])

    def run(self) -> dict[str, float]:
        """Run every stage; on any error (a failed stage, an install that raises, Ctrl-C) kill the running ones
        first."""
        try:
            return self._run()
        except BaseException:
            for proc, _ in self.running.values():
                proc.kill()
                proc.wait()
            raise

    def _run(self) -> dict[str, float]:
        pending = list(self.stages)
        last_progress = time.time()
        while pending or self.running:
            for name in self.ready(pending):
                if self.up_to_date(self.stages[name]):
                    pending.remove(name)
                    self.seconds[name] = 0.0
                    self.log(name, 'up to date, reused')
                elif len(self.running) < self.jobs:
                    pending.remove(name)
                    self.start(self.stages[name])
            for name, (proc, started) in list(self.running.items()):
                if proc.poll() is not None:
                    del self.running[name]
                    self.finish(name, proc.returncode, started)
            if time.time() - last_progress > 30:
                self.progress()
                last_progress = time.time()
            time.sleep(0.5)
        return self.seconds


def write_report(seconds: dict[str, float], jobs: int) -> str:
    """Assemble `results/demo/REPORT.md` from the sub-reports; returns the headline tables."""
    stage_rows = '\n'.join(f'| {name} | {s:.0f} |' for name, s in seconds.items())
    text = (
        '# basicsr-unlearn demo report\n\n'
        f'Hardware: {machine()}. Wall time of this run: {seconds["total (wall)"] / 60:.1f} min (stages reused from an '
        f'earlier run or installed from checkpoints/demo count 0; {jobs} stage(s) run at once, one CPU thread '
        'each).\n\n'
    )
    headlines = []
    for forget in FORGET_TYPES:
        sub = f'unlearn_{forget}'
        report = json.loads((OUT / sub / 'report.json').read_text())
        markdown = (OUT / sub / 'report.md').read_text()
        text += f'## Accurate forgetting of {forget} (tiny PromptIR, demo data)\n\n' + _relink(markdown, sub) + '\n'
        headlines.append(f'Forgetting {forget}:\n\n' + (report.get('headline_md') or markdown))
    text += ('## ASVP anti-distillation study\n\n' + _relink((OUT / 'asvp' / 'report.md').read_text(), 'asvp')
             + '\n## Stage times\n\n| stage | seconds |\n|---|---|\n' + stage_rows + '\n')
    write_text(OUT / 'REPORT.md', text)
    return '\n\n'.join(headlines)


def _relink(markdown: str, sub: str) -> str:
    """Point the sub-report's relative image links at its folder and demote its headings one level."""
    lines = []
    for line in markdown.splitlines():
        line = line.replace('](', f']({sub}/') if '![' in line and '](http' not in line else line
        lines.append('#' + line if line.startswith('#') else line)
    return '\n'.join(lines) + '\n'


def build_base(jobs: int, fresh: bool) -> None:
    """Train the data and every base model (reusing up-to-date stages unless `fresh`) and write them to
    `checkpoints/demo/`."""
    base, checks = [data_stage(), *base_stages({})], plateau_stages()
    Runner(base + checks, jobs, [s.name for s in base + checks] if fresh else ()).run()
    runs = {name: (option_file, seed) for name, option_file, seed in base_runs()}
    models = {s.run_dir.name: ship(SHIPPED, s.run_dir, *runs[s.name]) for s in base if s.name in runs}
    plateau = plateau_table(checks)
    write_json(SHIPPED / 'manifest.json', {'models': models, 'plateau_check': plateau})
    for run, check in plateau.items():
        print(f'{run}: {check["iters"]} -> {check["continued_iters"]} iterations moves val PSNR by '
              f'{check["move_db"]} dB: {"plateau" if check["plateau"] else "NOT at a plateau"}')
    print(f'{SHIPPED / "manifest.json"}: {len(models)} base models; commit checkpoints/demo/ to ship them')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--fresh', action='store_true', help='run every stage again, ignoring stamps')
    base = parser.add_mutually_exclusive_group()
    base.add_argument('--fresh-base', action='store_true',
                      help=f'train the base models in this run, even where trained before, instead of installing '
                           f'those of {SHIPPED}/')
    base.add_argument('--build-base', action='store_true',
                      help=f'train the base models and write them (with sha256, YAML, logs) to {SHIPPED}/, then stop')
    parser.add_argument('--jobs', type=int, default=2, help='stages run at once, one CPU thread each (default 2)')
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.build_base:
        build_base(args.jobs, args.fresh)
        return
    start = time.time()
    stages = build_stages({} if args.fresh_base else read_manifest())
    rerun = [s.name for s in stages] if args.fresh else [name for name, _, _ in base_runs()] if args.fresh_base else []
    seconds = Runner(stages, args.jobs, rerun).run()
    seconds['total (wall)'] = time.time() - start
    headline = write_report(seconds, args.jobs)
    print(f'\n{headline}\nFull report: {OUT / "REPORT.md"}')


if __name__ == '__main__':
    main()
