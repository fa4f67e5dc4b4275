"""Train with BasicSR's pipeline and the plugin: ``python tools/train.py -opt X.yml [--cfg-options a.b=v]``.

Multi-process: ``torchrun --nproc_per_node=N tools/train.py -opt X.yml --launcher pytorch`` (gloo on CPU, NCCL on
GPU). Also ``--auto_resume``, ``--debug``, ``--force_yml``. Outputs go under the current directory.
"""
import os

# isort: off
import basicsr_unlearn  # noqa: F401  (torchvision alias + registration; top level so workers re-run it)
# isort: on
from basicsr.train import train_pipeline

from basicsr_unlearn import compat


def main() -> None:
    compat.apply()
    try:
        train_pipeline(os.getcwd())
    finally:
        compat.destroy_process_group()


if __name__ == '__main__':
    main()
