"""CLIP weights in every form a user has, the activation they need, the fit check, and what a result records."""
import hashlib
import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from bench import records
from bench.tools.dryrun import openai_state_dict, write_openai_checkpoint
from models.backbone import BackboneError, create_clip
from run_bench import main as run_bench

MICRO = "par-vit-micro"  # 32 px, 2 blocks, width 64; its open_clip config uses GELU


def activations(model) -> set[str]:
    return {type(block.mlp.gelu).__name__ for block in model.visual.transformer.resblocks}


@pytest.fixture(scope="module")
def openai_files(tmp_path_factory):
    """Random micro weights in OpenAI's layout and fp16: a TorchScript archive and a plain state dict."""
    folder = tmp_path_factory.mktemp("openai")
    torch.manual_seed(0)
    source = create_clip(MICRO, None, activation="quick_gelu")
    archive = write_openai_checkpoint(source, folder / "ViT-micro.pt", image_size=32)
    plain = write_openai_checkpoint(source, folder / "ViT-micro-state.pt", image_size=32, torchscript=False)
    return archive, plain


def test_openai_torchscript_and_state_dict_load_alike_with_quick_gelu(openai_files):
    archive, plain = openai_files
    from_archive, from_plain = create_clip(MICRO, str(archive)), create_clip(MICRO, str(plain))
    assert from_archive.weights_info.format == "openai-torchscript"
    assert from_plain.weights_info.format == "openai-state-dict"
    for model in (from_archive, from_plain):
        assert activations(model) == {"QuickGELU"}
        assert (model.weights_info.activation, model.weights_info.activation_from) == ("quick_gelu", "weights")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(from_archive.encode_image(images), from_plain.encode_image(images))


def test_openai_weights_are_loaded_not_left_random(openai_files):
    archive, _ = openai_files
    stored = torch.jit.load(str(archive)).state_dict()
    loaded = create_clip(MICRO, str(archive)).state_dict()
    key = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    assert torch.equal(loaded[key], stored[key].float())


def test_open_clip_safetensors_of_a_gelu_architecture_keeps_gelu(tmp_path):
    source = create_clip(MICRO)
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = create_clip(MICRO, str(path))
    assert activations(model) == {"GELU"}
    info = model.weights_info
    assert (info.format, info.activation, info.activation_from) == ("open_clip-safetensors", "gelu", "architecture")
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_forced_activation_wins_and_says_it_goes_against_the_weights(openai_files):
    archive, _ = openai_files
    with pytest.warns(UserWarning, match="forced against weights trained with QuickGELU"):
        model = create_clip(MICRO, str(archive), activation="gelu")
    assert activations(model) == {"GELU"} and model.weights_info.activation_from == "forced"
    assert model.weights_info.weights_activation == "quick_gelu"


def _folder(root, *, quick_gelu: bool):
    source = create_clip(MICRO, None)
    root.mkdir(parents=True)
    config = {"model_cfg": {**open_clip.get_model_config(MICRO), "quick_gelu": quick_gelu}}
    (root / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(root / "open_clip_model.safetensors"))
    return root


def test_local_dir_and_hub_cache_folders_follow_their_config(tmp_path):
    local = _folder(tmp_path / "local", quick_gelu=True)
    model = create_clip(MICRO, str(local))
    assert model.weights_info.source == "local-dir" and activations(model) == {"QuickGELU"}
    hub = tmp_path / "models--someone--micro"
    _folder(hub / "snapshots" / "abc123", quick_gelu=False)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("abc123")
    model = create_clip(MICRO, str(hub))
    assert model.weights_info.source == "hub-cache" and activations(model) == {"GELU"}
    assert model.weights_info.path.endswith("snapshots/abc123/open_clip_model.safetensors")


def test_wrong_shapes_fail_in_one_line_naming_file_key_and_expectation(tmp_path):
    path = tmp_path / "micro.safetensors"
    save_file({k: v.contiguous() for k, v in create_clip(MICRO).state_dict().items()}, str(path))
    with pytest.raises(BackboneError) as error:
        create_clip("par-vit-tiny", str(path))
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "--pretrained" in message
    assert "positional_embedding" in message and "expects" in message


def test_missing_key_is_named(tmp_path, openai_files):
    state = torch.load(openai_files[1], weights_only=True)
    del state["visual.ln_post.weight"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(BackboneError, match=r"key 'visual.ln_post.weight' missing"):
        create_clip(MICRO, str(tmp_path / "cut.pt"))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_unreadable_files_name_the_file_and_never_suggest_unsafe_loading(tmp_path, content):
    path = tmp_path / "weights.bin"
    path.write_bytes(content)
    with pytest.raises(BackboneError) as error:
        create_clip(MICRO, str(path))
    assert str(path) in str(error.value) and "--pretrained" in str(error.value)
    assert "weights_only=False" not in str(error.value)


def test_openai_marker_keys_identify_a_plain_openai_state_dict():
    state = openai_state_dict(create_clip(MICRO), image_size=32)
    assert {"input_resolution", "context_length", "vocab_size"} <= set(state)
    assert state["visual.conv1.weight"].dtype == torch.float16  # OpenAI ships fp16


def test_a_run_records_what_was_loaded_and_the_resolved_config(tmp_path, openai_files):
    archive, _ = openai_files
    out = tmp_path / "runs"
    code = run_bench(["--preset", "smoke", "--strategies", "lora", "--pretrained", str(archive), "--out", str(out)])
    assert code == 0
    record = json.loads((out / "lora__f2_b16_s0.json").read_text())
    weights = record["weights"]
    assert (weights["format"], weights["activation"]) == ("openai-torchscript", "quick_gelu")
    assert weights["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert record["schema_version"] == records.SCHEMA_VERSION
    params = record["run"]["config"]["strategy"]["params"]
    assert {"r", "alpha", "dropout", "targets"} <= set(params)  # every field, defaults included
    assert {"peft", "open_clip_torch", "torchvision"} <= set(record["environment"])
    history, chosen = record["metrics"]["history"], record["metrics"]["best_epoch"]
    select = record["run"]["config"]["train"]["select_metric"]
    assert record["metrics"]["val"][select] == history[chosen - 1][f"val_{select}"]


def test_wrong_shape_checkpoint_through_the_cli_exits_2_in_one_line(tmp_path, capsys):
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in create_clip("par-vit-tiny").state_dict().items()}, str(path))
    code = run_bench(["--preset", "smoke", "--strategies", "frozen", "--pretrained", str(path),
                      "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(path) in err[0]
