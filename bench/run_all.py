"""Run every benchmark in bench/ (quick presets) and print one table of the ratios they measured side by side.

Usage: ``python bench/run_all.py`` (``make bench``). Each ``bench/<name>.py`` has a ``main()`` that parses
``sys.argv``, prints its own details and returns ``{label: ratio}``.
"""
import importlib.util
import sys
import time
from pathlib import Path

import basicsr_unlearn  # noqa: F401  (torchvision alias before basicsr)
from basicsr_unlearn.evaluation.report import markdown_table

BENCH = Path(__file__).resolve().parent
NAMES = ('archs', 'data', 'unlearn', 'asvp')


def run(name: str) -> dict[str, float]:
    """Import ``bench/<name>.py`` and call its ``main()`` with ``--quick``."""
    spec = importlib.util.spec_from_file_location(f'bench_{name}', BENCH / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.argv = [f'bench/{name}.py', '--quick']
    return module.main()


def main() -> None:
    rows = []
    for name in NAMES:
        print(f'\n== bench/{name}.py --quick', flush=True)
        start = time.time()
        ratios = run(name)
        rows += [[name, label, value] for label, value in ratios.items()]
        print(f'({time.time() - start:.0f} s)')
    print('\n' + markdown_table(['bench', 'measured side by side', 'ratio'], rows))


if __name__ == '__main__':
    main()
