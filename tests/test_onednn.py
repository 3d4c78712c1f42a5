"""oneDNN packed convolutions (visionkit.models.onednn) and the CPU detector's forms: every form the load-time
timing may choose finds the boxes the plain network finds; a block packing would compute differently is left."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import TrainedDetector
from visionkit.inference import load_predictor
from visionkit.models.onednn import PackedConv2d, fuse_onednn, onednn_available

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN packed convolutions")


class ConvAct(nn.Module):
    """A block computing act(conv(x)), as ultralytics' Conv does once BatchNorm is folded in; `act_first` makes it
    conv(act(x)) instead, which packing with a fused activation would change."""

    def __init__(self, act: nn.Module, act_first: bool = False, groups: int = 1) -> None:
        super().__init__()
        self.conv, self.act, self.act_first = nn.Conv2d(8, 8, 3, padding=1, groups=groups), act, act_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(x)) if self.act_first else self.act(self.conv(x))


def test_blocks_are_packed_with_their_activation_and_give_the_same_output() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(
        ConvAct(nn.SiLU()), ConvAct(nn.ReLU(), groups=8), ConvAct(nn.Identity()), ConvAct(nn.Sigmoid())
    ).eval()
    probe = torch.randn(2, 8, 16, 12)
    packed = fuse_onednn(network, lambda m: isinstance(m, ConvAct), probe)
    assert packed is not network and all(isinstance(block.conv, PackedConv2d) for block in packed)
    assert [block.conv.post_op for block in packed] == ["swish", "relu", "none", "sigmoid"]
    assert all(isinstance(block.conv, nn.Conv2d) for block in network)  # the original is untouched
    other = torch.randn(3, 8, 20, 20)  # another batch and size than the probe
    with torch.inference_mode():
        assert torch.allclose(packed(other), network(other), rtol=1e-4, atol=1e-5)


def test_a_block_that_packing_would_change_is_left_as_it_was() -> None:
    network = nn.Sequential(ConvAct(nn.SiLU(), act_first=True)).eval()
    assert fuse_onednn(network, lambda m: isinstance(m, ConvAct), torch.randn(1, 8, 8, 8)) is network


@pytest.mark.parametrize("form", ["oneDNN-packed", "contiguous", "channels-last"])
def test_every_cpu_form_of_the_detector_finds_the_plain_networks_boxes(
    trained_detector: TrainedDetector, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever form the load-time timing picks on a CPU, the boxes are the unfused network's: each form is
    forced in turn (the chooser told to take it) and compared."""
    import visionkit.models.fastest as fastest  # the detector imports its chooser when it loads

    def take(forms, make_probe, batch_sizes, what):  # the timing's verdict, fixed
        return forms[form], dict.fromkeys(batch_sizes, form)

    tests = sorted(map(str, (trained_detector.data_yaml.parent / "images" / "test").glob("*.png")))[:24]
    plain = load_predictor(trained_detector.ckpt, conf=0.05, device="cpu", fuse=False)
    monkeypatch.setattr(fastest, "fastest_form", take)
    chosen = load_predictor(trained_detector.ckpt, conf=0.05, device="cpu")
    assert chosen.cpu_form == {1: form, 16: form}
    assert any(isinstance(m, PackedConv2d) for m in chosen.model.modules()) == (form == "oneDNN-packed")
    assert not any(isinstance(m, PackedConv2d) for m in plain.model.modules())
    weight = next(p for p in chosen.model.parameters() if p.ndim == 4) if form != "oneDNN-packed" else None
    if weight is not None:
        assert weight.is_contiguous(memory_format=torch.channels_last) == (form == "channels-last")
    found, expected = chosen(tests), plain(tests)
    assert sum(len(r) for r in expected) > 0
    for a, b in zip(found, expected):
        assert len(a) == len(b) and (a.classes == b.classes).all()
        assert np.abs(a.boxes - b.boxes).max(initial=0) < 1e-2 and np.abs(a.scores - b.scores).max(initial=0) < 1e-4


def test_the_detector_times_its_forms_at_load_and_logs_the_choice(
    trained_detector: TrainedDetector, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="visionkit.models.fastest"):
        predictor = load_predictor(trained_detector.ckpt, device="cpu", batch_size=8)
    assert set(predictor.cpu_form) == {1, 8}
    assert set(predictor.cpu_form.values()) <= {"channels-last", "contiguous", "oneDNN-packed"}
    assert "chosen by timing on this machine" in caplog.text and "batch 8: channels-last" in caplog.text
