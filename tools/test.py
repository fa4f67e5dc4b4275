"""Evaluate: ``python tools/test.py -opt X.yml [--cfg-options a.b=v]`` (same as the ``basicsr-unlearn-test`` command).

Multi-process: ``torchrun --nproc_per_node=N tools/test.py -opt X.yml --launcher pytorch`` shards the images over
ranks. See :mod:`basicsr_unlearn.launchers.test`.
"""
from basicsr_unlearn.launchers.test import main  # top level: spawned workers re-run it (torchvision alias)

if __name__ == '__main__':
    main()
