"""The whole product on one machine: demo data, the original and retrained models, every unlearning method, the
ASVP study, and `results/demo/REPORT.md`.

Usage:
    python tools/demo.py            # reuse finished stages whose merged options did not change
    python tools/demo.py --fresh    # run every stage again

Each stage is a real command (`tools/train.py`, `tools/unlearn_report.py`, ...) run in a subprocess with the
repository root as working directory. A stage is skipped when its stamp in `results/demo/stages/` carries the same
key: a hash of the command line and of the fully merged options of every YAML it reads (`_base_` resolved).
"""
import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import basicsr_unlearn  # noqa: F401  (torchvision alias before basicsr)
from basicsr_unlearn.config import load_options
from basicsr_unlearn.fileio import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
OUT = Path('results/demo')
ARCH = 'promptir-tiny'
FORGET = 'haze'
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
    """One demo step: a command, the option files it reads, the paths it must leave behind, the stages it needs."""

    name: str
    cmd: list[str]
    options: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)

    def key(self, needed_keys: list[str]) -> str:
        """Hash of the command, the merged options and the keys of the stages it needs."""
        merged = [load_options(str(p)) for p in self.options]
        blob = json.dumps({'cmd': self.cmd, 'options': merged, 'needs': needed_keys}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()


def find_option(folder: str, stem: str) -> Path:
    """The unique option file `options/<folder>/<stem>[_<schedule>].yml`."""
    folder_path = ROOT / 'options' / folder
    hits = sorted(folder_path.glob(f'{stem}_*.yml')) + sorted(folder_path.glob(f'{stem}.yml'))
    if len(hits) != 1:
        raise FileNotFoundError(f'options/{folder}/{stem}*.yml: expected exactly one file, found {hits or "none"}')
    return hits[0]


def experiment_dir(option_file: Path) -> Path:
    """`experiments/<name>` of a training option file."""
    return Path('experiments') / load_options(str(option_file))['name']


def train_stage(name: str, option_file: Path, needs: list[str]) -> Stage:
    return Stage(name, [sys.executable, 'tools/train.py', '-opt', str(option_file.relative_to(ROOT))],
                 [option_file], [experiment_dir(option_file) / 'models' / 'net_g_latest.pth'], needs)


def build_stages() -> list[Stage]:
    """All demo stages with their dependencies."""
    original_opt = find_option('train', f'train_{ARCH}_demo3_l1')
    reference_opt = find_option('train', f'train_{ARCH}_demo3-wo-{FORGET}_l1')
    test_opt = find_option('test', f'test_{ARCH}_demo3')
    study_opt = find_option('distill', f'asvp-study_{ARCH}_demo3')
    stages = [
        Stage('data', [sys.executable, 'tools/prepare_demo_data.py', '--out', 'datasets/demo', '--lmdb'],
              outputs=[Path('datasets/demo/manifest.json')]),
        train_stage('original', original_opt, ['data']),
        train_stage(f'retrain_wo_{FORGET}', reference_opt, ['data']),
    ]
    methods, trained = [], set()
    for method, stems in UNLEARN_METHODS.items():
        option_files = [find_option('unlearn', f'unlearn_{ARCH}_demo3_{stem}') for stem in stems]
        for i, (stem, option_file) in enumerate(zip(stems, option_files)):
            if stem not in trained:  # every method starts from the original; only an oracle variant reads the reference
                oracle = [f'retrain_wo_{FORGET}'] if 'oracle' in stem else []
                needs = ['original', *oracle] + [f'unlearn_{s}' for s in stems[:i]]
                stages.append(train_stage(f'unlearn_{stem}', option_file, needs))
                trained.add(stem)
        methods += ['--method', f"{method}={'+'.join(str(experiment_dir(f)) for f in option_files)}"]
    stages.append(Stage('unlearn_report', [
        sys.executable, 'tools/unlearn_report.py', '--opt', str(test_opt.relative_to(ROOT)),
        '--original', str(experiment_dir(original_opt)), '--reference', str(experiment_dir(reference_opt)),
        '--forget', FORGET, '--out', str(OUT / 'unlearn'), *methods,
    ], [test_opt], [OUT / 'unlearn' / 'report.md'],
        [f'retrain_wo_{FORGET}'] + [s.name for s in stages if s.name.startswith('unlearn_')]))
    stages.append(Stage('asvp_study', [
        sys.executable, 'tools/asvp_study.py', '--quick', '--opt', str(study_opt.relative_to(ROOT)),
        '--teacher', str(experiment_dir(original_opt) / 'models' / 'net_g_latest.pth'), '--out', str(OUT / 'asvp'),
    ], [study_opt], [OUT / 'asvp' / 'report.md'], ['original']))
    return stages


class Runner:
    """Runs stages as subprocesses, at most `jobs` at once, each single-threaded so wall times compare fairly."""

    def __init__(self, stages: list[Stage], jobs: int, fresh: bool):
        self.stages = {s.name: s for s in stages}
        self.jobs, self.fresh = jobs, fresh
        self.seconds: dict[str, float] = {}
        self.running: dict[str, tuple[subprocess.Popen, float]] = {}
        self.total = len(stages)
        self.keys: dict[str, str] = {}
        for stage in stages:  # in dependency order: a changed stage invalidates everything after it
            self.keys[stage.name] = stage.key([self.keys[n] for n in stage.needs])

    def up_to_date(self, stage: Stage) -> bool:
        stamp = OUT / 'stages' / f'{stage.name}.json'
        return (not self.fresh and stamp.is_file() and json.loads(stamp.read_text())['key'] == self.keys[stage.name]
                and all(p.exists() for p in stage.outputs))

    def log(self, name: str, text: str) -> None:
        done = len(self.seconds)
        print(f'[{time.strftime("%H:%M:%S")} {done}/{self.total}] {name}: {text}', flush=True)

    def start(self, stage: Stage) -> None:
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
            for proc, _ in self.running.values():
                proc.kill()
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
        pending = list(self.stages)
        last_progress = time.time()
        while pending or self.running:
            for name in [n for n in pending if all(d in self.seconds for d in self.stages[n].needs)]:
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


def write_report(seconds: dict[str, float]) -> str:
    """Assemble `results/demo/REPORT.md` from the two sub-reports; returns the headline table."""
    unlearn_md = (OUT / 'unlearn' / 'report.md').read_text()
    asvp_md = (OUT / 'asvp' / 'report.md').read_text()
    headline = json.loads((OUT / 'unlearn' / 'report.json').read_text()).get('headline_md', '')
    hardware = f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU'
    stage_rows = '\n'.join(f'| {name} | {s:.0f} |' for name, s in seconds.items())
    text = (
        '# basicsr-unlearn demo report\n\n'
        f'Hardware: {hardware}. Wall time of this run: {seconds["total (wall)"] / 60:.1f} min '
        '(stages reused from an earlier run count 0; two stages run at once, one thread each).\n\n'
        '## Accurate forgetting of haze (tiny PromptIR, demo data)\n\n'
        + _relink(unlearn_md, 'unlearn')
        + '\n## ASVP anti-distillation study\n\n'
        + _relink(asvp_md, 'asvp')
        + '\n## Stage times\n\n| stage | seconds |\n|---|---|\n' + stage_rows + '\n'
    )
    write_text(OUT / 'REPORT.md', text)
    return headline or unlearn_md


def _relink(markdown: str, sub: str) -> str:
    """Point the sub-report's relative image links at its folder and demote its headings one level."""
    lines = []
    for line in markdown.splitlines():
        line = line.replace('](', f']({sub}/') if '![' in line and '](http' not in line else line
        lines.append('#' + line if line.startswith('#') else line)
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--fresh', action='store_true', help='run every stage again, ignoring stamps')
    parser.add_argument('--jobs', type=int, default=2, help='stages run at once, one CPU thread each (default 2)')
    args = parser.parse_args()
    os.chdir(ROOT)
    start = time.time()
    seconds = Runner(build_stages(), args.jobs, args.fresh).run()
    seconds['total (wall)'] = time.time() - start
    headline = write_report(seconds)
    print(f'\n{headline}\nFull report: {OUT / "REPORT.md"}')


if __name__ == '__main__':
    main()
