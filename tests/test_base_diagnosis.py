"""bench/base_diagnosis.py: a training YAML whose loss it would not reproduce is refused, not silently replaced."""
import subprocess

from tests.helpers import PYTHON, ROOT, tool_env


def test_a_loss_other_than_l1_is_refused_before_training(tmp_path):
    yml = tmp_path / 'mse.yml'
    yml.write_text(f"_base_: [{ROOT / 'options/train/train_promptir-tiny_demo3_l1_2kit.yml'}]\n"
                   "train:\n  pixel_opt: {type: MSELoss, loss_weight: 1.0}\n")
    log = tmp_path / 'diag.jsonl'
    proc = subprocess.run([PYTHON, str(ROOT / 'bench/base_diagnosis.py'), '-opt', str(yml), '--log', str(log)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=tool_env())
    assert proc.returncode != 0
    assert "train.pixel_opt.type: this diagnosis trains with L1 only, got 'MSELoss'" in proc.stderr
    assert not log.exists()
