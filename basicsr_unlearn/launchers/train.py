"""Train with BasicSR's pipeline and the plugin: ``basicsr-unlearn-train -opt X.yml [--cfg-options a.b=v]``.

Multi-process: ``torchrun --nproc_per_node=N tools/train.py -opt X.yml --launcher pytorch`` (gloo on CPU, NCCL on
GPU). Also ``--auto_resume``, ``--debug``, ``--force_yml``. Outputs go under the current directory.
"""
from basicsr.train import train_pipeline

from basicsr_unlearn.launchers import launch


def main() -> None:
    """BasicSR's ``train_pipeline`` with the plugin, rooted at the current directory."""
    launch(train_pipeline)


if __name__ == '__main__':
    main()
