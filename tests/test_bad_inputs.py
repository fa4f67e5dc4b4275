"""Fault catalogue (issue 13): every bad input fails with an error naming the option or file, before any folder exists.

Cheap cases run in-process (checkpoint loading, ``validate_options``); cases about a launcher run it in a real
subprocess and also check the exit code and that no ``experiments/`` or ``results/`` folder was created or archived.
"""
from pathlib import Path

import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from helpers import tiny_train_options

from basicsr_unlearn.checkpoint import load_checkpoint

TINY_EDSR = tiny_train_options('.')['network_g']


def _edsr(**change: int) -> torch.nn.Module:
    return EDSR(**{**{k: v for k, v in TINY_EDSR.items() if k != 'type'}, **change})


def _truncated(path: Path) -> None:
    torch.save({'params': _edsr().state_dict()}, path)
    path.write_bytes(path.read_bytes()[:2000])


CHECKPOINTS = {
    'wrong size': (lambda p: torch.save({'params': _edsr(num_feat=16).state_dict()}, p),
                   r'does not fit EDSR: 9 of 10 shared tensors differ in shape \(conv_first\.weight: file '
                   r'\(16, 3, 3, 3\), net \(8, 3, 3, 3\).*check network_g'),
    'wrong arch': (lambda p: torch.save({'params': torch.nn.Conv2d(3, 3, 3).state_dict()}, p),
                   r'does not fit EDSR: 10 net keys missing from the file \(body\.0\.conv1\.bias, .*\), '
                   r'2 file keys unknown to the net \(bias, weight\)'),
    'more blocks': (lambda p: torch.save({'params': _edsr(num_block=2).state_dict()}, p),
                    r'4 file keys unknown to the net \(body\.1\.conv1\.bias'),
    'state_dict key': (lambda p: torch.save({'state_dict': _edsr().state_dict(), 'epoch': 3}, p),
                       r"has no 'params' entry \(path\.param_key_g: params\); its top-level keys are state_dict, "
                       r'epoch; set path\.param_key_g: state_dict'),
    'bare dict': (lambda p: torch.save(_edsr().state_dict(), p),
                  r"has no 'params' entry .*it is a bare state dict \(10 tensors, e\.g\. conv_first\.weight.*\): "
                  r'set path\.param_key_g: ~'),
    'nan weights': (lambda p: torch.save({'params': {k: v * float('nan') for k, v in _edsr().state_dict().items()}},
                                         p),
                    r'non-finite weights \(NaN/Inf\) in 10 of 10 tensors'),
    'truncated': (_truncated, r'cannot read the checkpoint \(2000 bytes; truncated or not a torch file'),
    'empty': (lambda p: p.write_bytes(b''), r'cannot read the checkpoint \(0 bytes'),
    'text file': (lambda p: p.write_text('not a checkpoint'), r'cannot read the checkpoint'),
    'numpy scalar': (lambda p: torch.save({'params': _edsr().state_dict(), 'psnr': __import__('numpy').float64(1)}, p),
                     r'holds an object that torch\.load\(weights_only=True\) refuses \(numpy'),
}


@pytest.mark.parametrize('case', list(CHECKPOINTS))
def test_bad_checkpoint_names_option_and_file(tmp_path: Path, case: str) -> None:
    write, message = CHECKPOINTS[case]
    path = tmp_path / 'net_g.pth'
    write(path)
    with pytest.raises(ValueError, match=rf'^path\.pretrain_network_g: {path}.*{message}'):
        load_checkpoint(_edsr(), path)


def test_checkpoint_loads_and_basicsr_load_network_goes_through_it(tmp_path: Path) -> None:
    from basicsr.models.base_model import BaseModel

    from basicsr_unlearn import compat

    compat.apply()
    good = _edsr()
    torch.save({'params': good.state_dict()}, tmp_path / 'ok.pth')
    net = _edsr()
    load_checkpoint(net, tmp_path / 'ok.pth')
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), good.state_dict().values()))
    net = _edsr()
    torch.save(good.state_dict(), tmp_path / 'bare.pth')
    paths = {'pretrain_network_teacher': str(tmp_path / 'bare.pth')}
    model = BaseModel({'num_gpu': 0, 'is_train': False, 'path': paths})
    with pytest.raises(ValueError, match=r"^path\.pretrain_network_teacher: .*bare\.pth has no 'params' entry "
                                         r'\(path\.param_key_teacher: params\)'):
        model.load_network(_edsr(), str(tmp_path / 'bare.pth'))
    model.load_network(net, str(tmp_path / 'bare.pth'), param_key=None)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), good.state_dict().values()))
