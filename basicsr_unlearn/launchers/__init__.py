"""The launchers: BasicSR's train/test pipelines with the plugin, as console scripts (``pyproject.toml``).

``basicsr-unlearn-train`` / ``basicsr-unlearn-test`` (or ``tools/train.py`` / ``tools/test.py``, thin wrappers, or
``python -m basicsr_unlearn.launchers.train``) take ``-opt X.yml`` plus BasicSR's flags and ``--cfg-options a.b=v``;
outputs go under the current directory. Multi-process: ``torchrun --nproc_per_node=N tools/train.py -opt X.yml
--launcher pytorch`` (or ``torchrun --no-python ... basicsr-unlearn-train ...``).
"""
import os
from collections.abc import Callable

from basicsr_unlearn import compat


def launch(pipeline: Callable[[str], object]) -> None:
    """Apply the compatibility fixes, run ``pipeline`` rooted at the current directory, end the process group."""
    compat.apply()
    try:
        pipeline(os.getcwd())
    finally:
        compat.destroy_process_group()
