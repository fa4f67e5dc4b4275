"""Train with BasicSR's pipeline and the plugin: ``basicsr-unlearn-train -opt X.yml [--cfg-options a.b=v]``.

Multi-process: ``torchrun --nproc_per_node=N tools/train.py -opt X.yml --launcher pytorch`` (gloo on CPU, NCCL on
GPU). Also ``--auto_resume``, ``--debug``, ``--force_yml``. Outputs go under the current directory.
"""
import os

from basicsr.train import train_pipeline

from basicsr_unlearn import compat


def main() -> None:
    """Apply the compatibility fixes, run ``train_pipeline`` rooted at the current directory, end the process group."""
    compat.apply()
    try:
        train_pipeline(os.getcwd())
    finally:
        compat.destroy_process_group()


if __name__ == '__main__':
    main()
