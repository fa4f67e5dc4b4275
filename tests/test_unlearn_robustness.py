"""UnlearnModel on awkward batches and set-ups: batches missing a role (in one process and across 2 DDP ranks: no
deadlock, ranks stay identical), EMA weights restored by the guard and the rewind, a stopped run resumed stays
stopped."""
import json
import subprocess
from pathlib import Path

import torch
from basicsr.archs import build_network
from helpers import ROOT, TINY_EDSR, TORCHRUN, free_port, run_tool, tiny_workspace, tool_env, write_yaml
from test_unlearn_model import GA_ADV, grouped_batch, nan_batch, options, pretrained, run, validate  # noqa: F401
from test_unlearn_model import same, weights
import yaml

from basicsr_unlearn.models.unlearn_model import UnlearnModel


def ema(model: UnlearnModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}


def test_guard_forget_only_first_batch_sets_no_retain_reference(tmp_path: Path, pretrained: str) -> None:  # noqa: F811
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'guard': {'explode_ratio': 3.0}}, pretrained))
    model.feed_data(grouped_batch(1, n_forget=3, n_retain=0))
    model.optimize_parameters(1)
    assert model.hooks[0].first_retain is None
    run(model, 3, first=2)
    assert not model.stopped, model.stop_reason
    assert model.hooks[0].first_retain > 0
    batch = grouped_batch(3)
    batch['gt'][:, 1:] = 1 - batch['gt'][:, 1:]  # a real explosion is still caught
    model.feed_data(batch)
    model.optimize_parameters(5)
    assert model.stopped and 'retain-side loss' in model.stop_reason


def test_guard_restores_the_ema_weights_too(tmp_path: Path, pretrained: str) -> None:  # noqa: F811
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'ema_decay': 0.5}, pretrained))
    run(model, 2)
    model.save(0, 2)
    good, good_ema = weights(model), ema(model)
    run(model, 2, seed0=1, first=3)  # the first of these steps confirms the saved weights
    assert not same(ema(model), good_ema)
    model.feed_data(nan_batch())
    model.optimize_parameters(5)
    assert model.stopped and 'non-finite loss' in model.stop_reason
    assert same(weights(model), good) and same(ema(model), good_ema)


def test_input_level_rewind_restores_the_ema_weights_too(tmp_path: Path, pretrained: str) -> None:  # noqa: F811
    stop = {'type': 'InputLevelStop', 'de_name': 'haze', 'margin': -60.0, 'retain_delta': 0.0}
    model = UnlearnModel(options(tmp_path, {'method': {'type': 'GradientAscent', 'tau': 1.0}, 'ema_decay': 0.5,
                                            'optim_g': {'type': 'Adam', 'lr': 1e-2}, 'stop': stop}, pretrained))
    validate(model, 1)
    at_round, at_round_ema = weights(model), ema(model)
    run(model, 10, first=2)
    validate(model, 11)
    run(model, 1, first=12)
    assert model.stopped and 'rewound to iter 1' in model.stop_reason
    assert same(weights(model), at_round) and same(ema(model), at_round_ema)
