"""Option composition (_base_, --cfg-options), key checks and fail-fast validation."""
from pathlib import Path

import pytest
import yaml
from helpers import run_tool, tiny_train_options, tiny_workspace, write_yaml

from basicsr_unlearn.config import apply_force_yml, check_keys, dump_options, load_options, validate_options


def test_check_keys_names_path_and_suggests() -> None:
    check_keys({'forget': 'haze'}, ['forget', 'retain'], 'unlearn')
    with pytest.raises(ValueError) as err:
        check_keys({'forget': 'haze', 'forgett': 1}, ['forget', 'retain'], 'unlearn')
    assert str(err.value) == "unlearn: unknown key 'forgett'; expected one of forget, retain (did you mean 'forget'?)"


def test_base_inheritance_and_cfg_options(tmp_path: Path) -> None:
    base = {'train': {'total_iter': 100, 'optim_g': {'type': 'Adam', 'lr': 1e-3}}}
    write_yaml(tmp_path / '_base_' / 'sched.yml', base)
    (tmp_path / 'exp.yml').write_text('_base_: [_base_/sched.yml]\nname: x\ntrain:\n  optim_g: {lr: !!float 2e-4}\n')
    opt = load_options(str(tmp_path / 'exp.yml'), {'train.total_iter': 7, 'new.key': [1, 2]})
    assert opt == {'train': {'total_iter': 7, 'optim_g': {'type': 'Adam', 'lr': 2e-4}}, 'name': 'x',
                   'new': {'key': [1, 2]}}
    assert yaml.safe_load(dump_options(opt)) == opt
    with pytest.raises(FileNotFoundError, match='-opt: option file not found'):
        load_options(str(tmp_path / 'missing.yml'))


@pytest.mark.parametrize('change, message', [
    ({'model_type': 'AllInOneModell'}, "model_type: unknown 'AllInOneModell'; expected one of .*AllInOneModel"),
    ({'network_g': {'type': 'EDSRR'}}, "network_g.type: unknown 'EDSRR'; expected one of .*EDSR"),
    ({'path': {'pretrain_network_g': 'nowhere/net_g.pth'}}, 'path.pretrain_network_g: file not found: nowhere'),
])
def test_validate_options_fails_fast(tmp_path: Path, change: dict, message: str) -> None:
    tiny_workspace(tmp_path)
    opt = tiny_train_options(tmp_path / 'data')
    validate_options(opt)
    opt.update(change)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        validate_options(opt, where='x.yml')


def test_launcher_fails_fast_on_bad_arch_before_creating_folders(tmp_path: Path) -> None:
    option_file = tiny_workspace(tmp_path)
    proc = run_tool('train.py', ['-opt', option_file, '--cfg-options', 'network_g.type=EDSRR'], tmp_path)
    assert proc.returncode != 0
    assert "network_g.type: unknown 'EDSRR'; expected one of" in proc.stderr
    assert not (tmp_path / 'experiments').exists()


def test_launcher_rejects_typo_in_plugin_key(tmp_path: Path) -> None:
    option_file = tiny_workspace(tmp_path)
    proc = run_tool('train.py', ['-opt', option_file, '--cfg-options', 'val.tilee.size=16'], tmp_path)
    assert proc.returncode != 0
    assert "val: unknown key 'tilee'" in proc.stderr and "(did you mean 'tile'?)" in proc.stderr
    assert not (tmp_path / 'experiments').exists()


def test_launcher_rejects_unknown_degradation_name_before_creating_folders(tmp_path: Path) -> None:
    option_file = tiny_workspace(tmp_path)
    opt = yaml.safe_load(Path(option_file).read_text())
    opt['datasets']['val_haze'] = {'name': 'haze', 'type': 'MixedDegradationDataset', 'sources': [
        {'degradation': 'rain', 'type': 'folder', 'dataroot_gt': 'x/gt', 'dataroot_lq': 'x/lq'},
        {'degradation': 'hazy', 'type': 'folder', 'dataroot_gt': 'y/gt', 'dataroot_lq': 'y/lq'}]}
    proc = run_tool('train.py', ['-opt', write_yaml(option_file, opt)], tmp_path)
    assert proc.returncode != 0
    assert "datasets.val_haze.sources[1].degradation: unknown 'hazy'; expected one of noise15" in proc.stderr
    assert not (tmp_path / 'experiments').exists()


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / '_base_').mkdir()
    (tmp_path / '_base_' / 'data.yml').write_text('datasets:\n  train:\n    name: x\n   type: y\n')
    (tmp_path / 'exp.yml').write_text('_base_: [_base_/data.yml]\nname: x\n')
    with pytest.raises(ValueError, match=r'_base_/data\.yml:4:4: YAML syntax error: expected <block end>, but found '
                                         r"'<block mapping start>' \(while parsing a block mapping from line 2\)"):
        load_options(str(tmp_path / 'exp.yml'))
    (tmp_path / 'exp.yml').write_text('_base_: [_base_/missing.yml]\nname: x\n')
    with pytest.raises(FileNotFoundError, match=r'exp\.yml: _base_: option file not found: .*_base_/missing\.yml'):
        load_options(str(tmp_path / 'exp.yml'))
    (tmp_path / 'exp.yml').write_text('- a\n- b\n')
    with pytest.raises(ValueError, match=r'exp\.yml: expected a mapping of options at the top level, got list'):
        load_options(str(tmp_path / 'exp.yml'))


def test_force_yml_reaches_into_list_blocks_and_names_a_bad_index() -> None:
    opt = {'datasets': {'train': {'sources': [{'repeat': 1}, {'repeat': 1}]}}}
    assert apply_force_yml(opt, ['datasets:train:sources:1:repeat=3'])['datasets']['train']['sources'] == [
        {'repeat': 1}, {'repeat': 3}]
    with pytest.raises(ValueError, match=r"'datasets:train:sources' is a list of 2; expected an index 0\.\.1, got '2'"):
        apply_force_yml(opt, ['datasets:train:sources:2:repeat=3'])
