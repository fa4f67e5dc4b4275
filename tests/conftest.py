"""Shared fixtures. The plugin is imported before anything of basicsr (torchvision alias)."""
from pathlib import Path

import pytest
import torch

import basicsr_unlearn  # noqa: F401  (before anything of basicsr)


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TINY demo set (same layout as ``datasets/demo``, LMDBs included) at ``<tmp>/datasets/demo``.

    The ``options/_base_/datasets/demo3*.yml`` paths are relative (``datasets/demo/...``): run with the working
    directory at ``demo_root.parents[1]`` (``monkeypatch.chdir(demo_root.parents[1])`` or ``cwd=`` of a subprocess).
    """
    from basicsr_unlearn.data.demo_data import build_demo

    root = tmp_path_factory.mktemp('demo_data') / 'datasets' / 'demo'
    build_demo(root, size='tiny', lmdb=True)
    return root


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread for a module: tiny nets run faster so, much faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
