"""The sensitivity machinery of the embedded default: kinds of attributes, the ablation switches (visual attention
discarded, frames repeated or shuffled), F1 per kind, and the side network scaled with its backbone."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from bench import cli, records
from bench.config import RunConfig
from bench.measure import metrics
from bench.measure.profile import measure_flops
from bench.numerics import FP32
from data.ablation import FrameAblation
from data.schema import DUKE, KINDS, MARS, SYNTHETIC, get_schema
from data.synthetic import (
    PARTS,
    SyntheticConfig,
    SyntheticVideoPAR,
    _tracks,
    bag_half,
    part_map,
    render_frames,
    sample_person,
)
from models.loss import WeightedBCE
from models.vision import discard_attention
from strategies.side import proportional_side
from tests.conftest import micro_model, micro_video

ROOT = Path(__file__).resolve().parent.parent


def test_every_group_has_a_kind_and_each_kind_is_present_in_mars():
    assert {g.kind for g in MARS.groups} == {g.kind for g in SYNTHETIC.groups} == set(KINDS)
    assert MARS.groups_of_kind("temporal") == DUKE.groups_of_kind("temporal") == ["motion"]
    assert SYNTHETIC.groups_of_kind("temporal") == ["shoulder bag", "hand bag", "motion"]
    assert {"top colour", "bottom colour"} <= set(SYNTHETIC.groups_of_kind("spatial"))
    assert SYNTHETIC.column_names() == MARS.column_names() and get_schema("synthetic") is SYNTHETIC


def _people(n: int, seed: int = 7):
    return [sample_person(np.random.default_rng([seed, i])) for i in range(n)]


def _cues(person) -> np.ndarray:
    """(L, 3) per-frame values of the motion cues: stance (legs apart), scene offset, body scale."""
    _, phase, scroll, scale = _tracks(person)
    return np.stack([np.round(np.sin(phase)), scroll, scale], axis=1)


def test_motion_is_at_chance_from_any_single_frame():
    """Every motion cue in any one frame is a fair coin whatever the class: the same distribution for every class
    (so one frame, whichever, tells nothing), frame 0 pixel-identical across classes; across the halves the cues of
    a moving class change and those of a standing person do not."""
    people = _people(600)
    for t in (0, 5, 8, 15):
        by_class = {}
        for person in people:
            cues = _cues(person)[t]
            by_class.setdefault(person.attrs["motion"], []).append(
                (cues[0], (cues[1] - person.scroll0) % 1.0 > 1e-9, cues[2] == 1.0))
        rates = np.array([np.mean(v, axis=0) for v in by_class.values()])  # (classes, 3) share of each cue value
        for cue in (0, 2):
            assert stats.chi2_contingency(np.array([[r * len(v), (1 - r) * len(v)] for r, v in
                                                    zip(rates[:, cue], by_class.values(), strict=True)])
                                          + 1e-9).pvalue > 0.001
    person = people[0]
    first = [render_frames(person.with_attribute("motion", m), [0, 7], image_size=32) for m in range(5)]
    assert all(np.array_equal(first[0], f) for f in first[1:])
    moved = [np.any(_cues(person.with_attribute("motion", m))[0] != _cues(person.with_attribute("motion", m))[8])
             for m in range(5)]
    assert moved == [True, True, True, False, True]  # walking, running, riding, staying, varies


def test_a_bag_shows_in_one_half_of_the_tracklet_only():
    """A carried shoulder or hand bag shows in the frames of one half and in none of the other, the half a fair coin
    over people: one frame misses it half of the time, one frame from each half (the default's 2-frame segments)
    never does."""
    halves = []
    for person in _people(200):
        for bag in ("shoulder bag", "hand bag"):
            carrier = person.with_attribute(bag, 1).with_attribute("pose", "frontal")
            parts = part_map(carrier, range(16), image_size=64, nuisance_scale=0)
            shown = (parts == PARTS[bag]).any(axis=(1, 2))  # (16,) frames with any bag pixel
            assert shown[:8].all() != shown[8:].any() and (shown[:8].all() or shown[8:].all()), (bag, shown)
            assert bag_half(carrier, bag) == int(shown[8:].all())
            halves.append(bag_half(carrier, bag))
    assert stats.binomtest(sum(halves), len(halves)).pvalue > 0.001


def test_spatial_attributes_are_relations_between_parts_of_the_body():
    """Gender is drawn as the shoulder-to-hip width ratio and nothing else: a woman and a man of the same latent draw
    differ only in the width of the torso and legs, never in what colour or part shows anywhere else."""
    person = _people(1)[0]
    woman, man = (part_map(person.with_attribute("female", f), [0], image_size=64, nuisance_scale=0)[0]
                  for f in (1, 0))
    changed = woman != man
    assert changed.any()
    body_parts = {PARTS[p] for p in ("top", "top2", "bottom", "bottom2", "skin", "shoe", "shoulder bag",
                                     "hand bag", "backpack")} | {0}
    assert set(np.unique(woman[changed])) | set(np.unique(man[changed])) <= body_parts


def test_discarded_attention_keeps_parameters_and_flops_but_changes_the_output():
    intact, ablated = micro_model(), micro_model()
    ablated.load_state_dict(intact.state_dict())
    assert discard_attention(ablated.backbone) == len(ablated.backbone_blocks)
    video, target = micro_video(), torch.zeros(2, MARS.num_columns)
    intact.eval(), ablated.eval()
    assert not torch.allclose(intact(video), ablated(video))
    assert sum(p.numel() for p in intact.parameters()) == sum(p.numel() for p in ablated.parameters())
    loss = WeightedBCE(torch.full((MARS.num_columns,), 0.3))
    flops = [measure_flops(m, video, target, loss_fn=loss, numerics=FP32)["fwd_flops_per_clip"]
             for m in (intact, ablated)]
    assert flops[0] == flops[1]
    ablated.train()
    ablated(video).sum().backward()
    attention = ablated.backbone_blocks[0].attn.in_proj_weight.grad
    assert attention is not None and torch.count_nonzero(attention) == 0  # the branch no longer reaches the loss


def _clips(mode: str) -> FrameAblation:
    cfg = SyntheticConfig(num_train=4, num_val=2, num_test=2, image_size=32, tracklet_length=16, seed=1)
    return FrameAblation(SyntheticVideoPAR(cfg, "test", num_frames=4, train=False), mode, seed=3)


def test_one_frame_repeats_the_first_sampled_frame_and_keeps_labels():
    plain = SyntheticVideoPAR(_clips("one").dataset.cfg, "test", num_frames=4, train=False)
    (video, labels), (original, original_labels) = _clips("one")[1], plain[1]
    assert video.shape == original.shape
    assert all(torch.equal(video[t], original[0]) for t in range(4))
    assert torch.equal(labels, original_labels)
    assert np.array_equal(_clips("one").labels, plain.labels)  # attributes of the wrapped split pass through


def test_shuffle_permutes_the_frames_the_same_way_every_time():
    shuffled, plain = _clips("shuffle"), _clips("shuffle").dataset
    video, original = shuffled[0][0], plain[0][0]
    assert torch.equal(video, shuffled[0][0])
    assert sorted(float(f.sum()) for f in video) == sorted(float(f.sum()) for f in original)
    assert any(not torch.equal(a, b) for a, b in zip(video, original, strict=True)) or len(video) == 1


def test_ablate_flag_sets_the_config_and_labels_the_report_setting():
    args = cli.build_parser().parse_args(["--ablate", "visual-attention,one-frame"])
    over = cli.overrides(args)
    assert over["model"]["visual_attention"] is False and over["data"]["frame_ablation"] == "one"
    cfg = RunConfig.from_dict(over).to_dict()
    assert records.switches_of(cfg) == "no-visual-attention+frames=one"
    assert records.switches_of(RunConfig().to_dict()) == "-"


@pytest.mark.parametrize("value", ["attention", "one-frame,shuffle-frames"])
def test_ablate_flag_rejects_unknown_or_contradictory_names(value, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(["--ablate", value])
    assert stop.value.code == 2 and "--ablate" in capsys.readouterr().err


def test_f1_per_kind_is_the_mean_of_its_groups():
    rng = np.random.default_rng(0)
    labels = np.zeros((40, MARS.num_columns), np.float32)
    for start, group in zip(MARS.boundaries, MARS.groups, strict=False):
        if group.binary:
            labels[:, start] = rng.random(40) < 0.5
        else:
            labels[np.arange(40), start + rng.integers(group.width, size=40)] = 1
    probs = np.clip(labels * 0.8 + rng.random(labels.shape) * 0.3, 0, 1)
    result = metrics.evaluate(probs, labels, MARS)
    for kind in KINDS:
        groups = MARS.groups_of_kind(kind)
        assert result[f"macro_f1_{kind}"] == pytest.approx(np.mean([result["per_group"][g]["macro_f1"]
                                                                    for g in groups]))


def test_side_network_of_the_default_is_scaled_with_its_backbone_as_the_paper_scales_it():
    config = json.loads((ROOT / "models" / "configs" / "par-vit-tiny.json").read_text())["vision_cfg"]
    defaults = json.loads((ROOT / "experiments" / "defaults.json").read_text())["strategy_defaults"]["side"]
    assert defaults == proportional_side(depth=config["layers"], width=config["width"])
    paper = proportional_side(depth=12, width=768)
    assert (paper["width"], paper["heads"], paper["ssn_depth"]) == (240, 6, 7)  # VTFPAR++ section 3.3
