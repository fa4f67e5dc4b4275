"""Train: ``python tools/train.py -opt X.yml [--cfg-options a.b=v]`` (same as the ``basicsr-unlearn-train`` command).

Multi-process: ``torchrun --nproc_per_node=N tools/train.py -opt X.yml --launcher pytorch``. See
:mod:`basicsr_unlearn.launchers.train`.
"""
from basicsr_unlearn.launchers.train import main  # top level: spawned workers re-run it (torchvision alias)

if __name__ == '__main__':
    main()
