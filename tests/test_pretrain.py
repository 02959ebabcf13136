"""Synthetic CLIP pre-training: the committed checkpoint loads through open_clip and matches its metadata, captions
describe static appearance only, and a tiny run is finite and repeatable."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bench.tools.pretrain import (
    CONFIG_FILE,
    DEFAULT_OUT,
    METADATA_FILE,
    WEIGHTS_FILE,
    PretrainConfig,
    build_parser,
    param_groups,
    recall_at,
    sha256_of,
    train,
    warmup_cosine,
)
from data import captions
from data.schema import MARS
from models.backbone import CONFIG_DIR, create_clip, tokenizer_for

CHECKPOINT = Path(__file__).resolve().parents[1] / DEFAULT_OUT
FUNCTION_WORDS = {"a", "an", "the", "who", "is", "whose", "from", "seen"}


def _metadata() -> dict:
    return json.loads((CHECKPOINT / METADATA_FILE).read_text())


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _captions(n: int, seed: int = 5) -> list[captions.Pair]:
    cfg = captions.PairConfig(image_size=16, data_seed=seed, split_id=captions.HELD_OUT_SPLIT, wide=False)
    return [captions.render_pair(cfg, i) for i in range(n)]


@pytest.mark.parametrize("form", ["local-dir", "file"])
def test_committed_checkpoint_loads_in_fp32_with_the_stored_fp16_values(form):
    stored = load_file(str(CHECKPOINT / WEIGHTS_FILE))
    assert all(v.dtype == torch.float16 for v in stored.values())
    model = (create_clip(f"local-dir:{CHECKPOINT}") if form == "local-dir"
             else create_clip("par-vit-tiny", str(CHECKPOINT / WEIGHTS_FILE)))
    state = model.state_dict()
    assert set(state) == set(stored)
    for name, value in state.items():
        assert value.dtype == torch.float32 and torch.equal(value, stored[name].float()), name
    assert (CHECKPOINT / WEIGHTS_FILE).stat().st_size <= 25 * 2**20


def test_checkpoint_config_is_the_current_architecture():
    """The file form builds par-vit-tiny from models/configs; it must be the architecture that was trained."""
    saved = json.loads((CHECKPOINT / CONFIG_FILE).read_text())["model_cfg"]
    assert saved == json.loads((CONFIG_DIR / "par-vit-tiny.json").read_text())


def test_metadata_records_the_default_command_and_the_weights_hash():
    meta = _metadata()
    defaults = vars(build_parser().parse_args([]))
    added_later = {key: value for key, value in defaults.items() if key not in meta["arguments"]}
    assert meta["arguments"] == {k: v for k, v in defaults.items() if k not in added_later}
    assert added_later in ({}, {"twins": False})  # an option added since defaults to off: the command still holds
    assert meta["command"].split()[:3] == ["python", "-m", "bench.tools.pretrain"]
    assert meta["weights"]["sha256"] == sha256_of(CHECKPOINT / WEIGHTS_FILE)
    assert meta["data"]["captions_never_mention"] == ["pose", "motion", "age"]
    assert meta["wall_time_s"]["total"] <= 45 * 60  # reproducible on a 2-core CPU within the hour


def test_recorded_zero_shot_figures_beat_random_init_and_chance():
    checks = _metadata()["zero_shot"]
    trained, rand = checks["pretrained"], checks["random_init"]
    for key in ("top_colour", "bottom_colour"):
        assert trained[f"{key}_accuracy"] > 2 * trained[f"{key}_chance"]
        assert trained[f"{key}_accuracy"] > rand[f"{key}_accuracy"] + 0.1
    for key in ("image_to_text_r5", "text_to_image_r5"):
        assert trained[key] > 3 * trained["chance_r5"] and trained[key] > rand[key]


def test_captions_never_name_motion_pose_or_age():
    banned = set()
    for name in captions.OMITTED_GROUPS:
        group = MARS.group(name)
        banned |= _words(" ".join(group.classes) + " " + " ".join(group.expansions.values()) + " " + name)
    banned -= FUNCTION_WORDS
    assert {"walking", "riding", "frontal", "back", "side", "old", "child", "teenager"} <= banned
    for pair in _captions(300):
        assert not _words(pair.caption) & banned, pair.caption


def test_captions_only_state_true_attributes():
    """A long-haired woman, red top, blue trousers, backpack, no other bag or hat: nothing else is ever said."""
    attrs = {g: 0 for g in captions.DESCRIBED_GROUPS}
    attrs.update({"top colour": 7, "bottom colour": 7, "backpack": 1, "female": 1, "long hair": 1})
    absent = r"a (hat|cap|handbag|hand bag|shoulder bag|messenger bag)"
    rng, seen = np.random.default_rng(0), set()
    for _ in range(300):
        text = captions.caption(attrs, rng)
        seen |= _words(text)
        assert not _words(text) & {"man", "male", "skirt", "shorts", "short", "black", "white", "patterned"}, text
        assert len(re.findall(absent, text)) == len(re.findall("without " + absent, text)), text
        assert not re.search("without a (backpack|rucksack)", text), text
    assert {"red", "blue", "woman", "female", "backpack", "rucksack", "trousers", "sleeved", "without", "hair"} <= seen


def test_captions_fit_the_text_context_untruncated():
    tokens = tokenizer_for("par-vit-tiny")([p.caption for p in _captions(300, seed=1)])  # (300, 32)
    eot = tokens.argmax(dim=1)  # the end token has the highest id
    assert (tokens[torch.arange(len(tokens)), eot] == 49407).all() and (eot < tokens.shape[1] - 1).all()


def test_zero_shot_prompts_follow_the_schema_class_order():
    assert captions.zero_shot_prompts("top colour")[7] == "a person in a red top"
    assert captions.zero_shot_prompts("bottom colour")[9] == "a person in patterned bottoms"
    with pytest.raises(captions.CaptionError, match="top colour"):
        captions.zero_shot_prompts("age")


def test_pair_people_never_come_from_the_par_splits_and_repeat_exactly():
    with pytest.raises(captions.CaptionError, match="split_id"):
        captions.PairConfig(split_id=2)
    cfg = captions.PairConfig(image_size=24)
    a, b = captions.render_pair(cfg, 7), captions.render_pair(cfg, 7)
    assert np.array_equal(a.image, b.image) and a.caption == b.caption and a.image.shape == (24, 24, 3)


def test_apply_views_identity_and_flip():
    x = torch.randn(2, 3, 8, 8)
    ident = np.array([[0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, -1.0]])
    out = captions.apply_views(x, ident)
    assert torch.allclose(out[0], x[0], atol=1e-5) and torch.allclose(out[1], x[1].flip(-1), atol=1e-5)


def test_warmup_cosine_and_recall_by_hand():
    assert [warmup_cosine(s, warmup=2, total=6) for s in (0, 1, 2, 4, 6)] == pytest.approx([0.5, 1, 1, 0.5, 0])
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.0], [0.1, 0.2, 0.3]])  # own scores ranked 1, 2, 1
    assert recall_at(sim, 1) == pytest.approx(2 / 3) and recall_at(sim, 2) == 1.0


def test_no_weight_decay_on_gains_biases_and_logit_scale():
    model = create_clip("par-vit-micro")
    no_decay, decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert "logit_scale" in {names[id(p)] for p in no_decay["params"]} and decay["weight_decay"] == 0.1
    assert all(p.ndim >= 2 for p in decay["params"]) and "visual.proj" in {names[id(p)] for p in decay["params"]}


def test_tiny_pretraining_run_is_finite_and_deterministic():
    cfg = PretrainConfig(steps=3, batch_size=8, warmup_steps=1, workers=0)
    (model_a, losses_a), (model_b, losses_b) = train(cfg, progress=False), train(cfg, progress=False)
    assert len(losses_a) == 3 and all(math.isfinite(x) for x in losses_a)
    assert abs(losses_a[0] - math.log(8)) < 0.5  # near-identical features at initialisation: loss ~ ln B
    assert losses_a == losses_b
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(),
                                                 strict=True))


def test_twin_pairs_differ_in_one_shown_attribute_that_both_captions_name():
    """Hard negatives (``PairConfig.twins``): pair 2k + 1 is pair 2k's person, frame and view with one binary
    attribute flipped, one the frame shows; the pictures differ, and so do the captions, which both name it."""
    cfg = captions.PairConfig(image_size=32, twins=True)
    flipped = set()
    for k in range(40):
        first, second = captions.render_pair(cfg, 2 * k), captions.render_pair(cfg, 2 * k + 1)
        differ = [g for g in first.attrs if first.attrs[g] != second.attrs[g]]
        assert len(differ) == 1 and differ[0] in captions.FLIPPABLE_GROUPS
        assert np.array_equal(first.view, second.view) and (first.image != second.image).any()
        assert first.caption != second.caption
        flipped.add(differ[0])
    assert len(flipped) >= 6  # the flip is drawn over the groups, not always the same one


def test_must_say_groups_are_always_named_and_twins_leave_the_plain_stream_alone():
    rng = np.random.default_rng(0)
    attrs = captions.uniform_attributes(rng)
    for seed in range(30):
        said = captions._mentioned(attrs, np.random.default_rng(seed), frozenset({"hat"}))
        assert "hat" in said
    plain = captions.PairConfig(image_size=48)
    assert captions.render_pair(plain, 3).caption == ("an image of a woman dressed in a mini skirt with a cap with "
                                                      "long hair, without a shoulder bag")  # the shipped CLIP's data
    with pytest.raises(captions.CaptionError, match="even with twins"):
        captions.PairBatches(captions.PairConfig(image_size=32, twins=True), batch_size=3, num_batches=1,
                             tokenizer=None)
