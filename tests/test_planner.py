"""TP sizing against hand computations for the shipped Llama-3.1 8B and 70B configs.

Units: GB = 1e9 bytes, GiB = 2**30 bytes. --gpu-mem is GiB. Unless a test says otherwise the plan
uses the defaults: context 32768, concurrency 24, headroom 0.12, overhead 3 GiB per GPU, so the
per-GPU budget on an 80 GiB GPU is 80 x 0.88 = 70.4 GiB.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.engine import planner
from pipeline.engine.planner import GB, GiB
from pipeline.errors import ConfigError

runner = CliRunner()

# Llama-3.1-8B: embed 128256 x 4096 = 525,336,576 (and the same again for the untied lm_head).
# Per layer: q 4096x4096 = 16,777,216; k, v 4096x(8x128) = 4,194,304 each; o 16,777,216
#   -> attention 41,943,040; MLP gate/up/down 3 x 4096 x 14336 = 176,160,768; 2 norms 8,192
#   -> 218,112,000 per layer; x 32 layers = 6,979,584,000. Final norm 4,096.
# Total 2 x 525,336,576 + 6,979,584,000 + 4,096 = 8,030,261,248 (~8.03e9) -> bf16 16,060,522,496 B (~16.06 GB).
PARAMS_8B = 8_030_261_248
# Llama-3.1-70B: embed 128256 x 8192 = 1,050,673,152 (x2, untied).
# Per layer: q 8192x8192 = 67,108,864; k, v 8192x1024 = 8,388,608 each; o 67,108,864
#   -> attention 150,994,944; MLP 3 x 8192 x 28672 = 704,643,072; 2 norms 16,384
#   -> 855,654,400 per layer; x 80 = 68,452,352,000. Final norm 8,192.
# Total 2 x 1,050,673,152 + 68,452,352,000 + 8,192 = 70,553,706,496 (~70.55e9) -> bf16 141,107,412,992 B (~141.1 GB).
PARAMS_70B = 70_553_706_496
# FP8 70B: linear layers 80 x (150,994,944 + 704,643,072) = 68,451,041,280 params at 1 byte;
# embeddings + lm_head + norms 2,101,346,304 + 80 x 16,384 + 8,192 = 2,102,665,216 params at 2 bytes
#   = 4,205,330,432 B. Total 72,656,371,712 B (~72.66 GB), 51.5% of bf16, not exactly half.
FP8_70B_BYTES = 72_656_371_712


@pytest.fixture(scope="module")
def shape_8b() -> planner.ModelShape:
    return planner.load_shape("llama-3.1-8b")


@pytest.fixture(scope="module")
def shape_70b() -> planner.ModelShape:
    return planner.load_shape("llama-3.1-70b")


def _by_tp(p: planner.Plan) -> dict[int, planner.TPOption]:
    assert p.per_tp, "a plan must list at least one TP"
    return {o.tp: o for o in p.per_tp}


# -- parameter and byte counts ---------------------------------------------------------------


def test_param_counts_match_hand_computation(shape_8b, shape_70b):
    assert planner.param_counts(shape_8b).total == PARAMS_8B
    assert planner.param_counts(shape_70b).total == PARAMS_70B


def test_param_counts_match_transformers_llama_built_on_meta_device():
    # The real LlamaForCausalLM from the same config.json, built without allocating weights.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for name, expected in (("llama-3.1-8b", PARAMS_8B), ("llama-3.1-70b", PARAMS_70B)):
        cfg = transformers.AutoConfig.from_pretrained(str(planner.CONFIGS_DIR / f"{name}.json"))
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(cfg)
        assert (
            sum(p.numel() for p in model.parameters())
            == expected
            == planner.param_counts(planner.load_shape(name)).total
        )


def test_bf16_weight_bytes_are_two_per_param(shape_8b, shape_70b):
    w8 = planner.weight_bytes(planner.param_counts(shape_8b), "bf16")
    w70 = planner.weight_bytes(planner.param_counts(shape_70b), "bf16")
    assert w8 == 2 * PARAMS_8B and round(w8 / GB, 2) == 16.06
    assert w70 == 2 * PARAMS_70B and round(w70 / GB, 1) == 141.1


def test_fp8_halves_linear_layers_but_keeps_embeddings_and_norms_bf16(shape_70b):
    counts = planner.param_counts(shape_70b)
    bf16 = planner.weight_bytes(counts, "bf16")
    fp8 = planner.weight_bytes(counts, "fp8")
    assert fp8 == FP8_70B_BYTES
    assert bf16 - fp8 == counts.linear  # exactly one byte saved per linear parameter
    assert 0.5 < fp8 / bf16 < 0.52  # "roughly halves": the bf16 embeddings are ~3% of the params


def test_tied_embeddings_count_once(shape_8b):
    tied = shape_8b.model_copy(update={"tie_word_embeddings": True})
    assert planner.param_counts(shape_8b).total - planner.param_counts(tied).total == 128256 * 4096


def test_kv_bytes_per_token_hand_computation(shape_8b, shape_70b):
    assert planner.kv_bytes_per_token(shape_8b) == 2 * 32 * 8 * 128 * 2 == 131_072
    assert planner.kv_bytes_per_token(shape_70b) == 2 * 80 * 8 * 128 * 2 == 327_680
    assert planner.kv_bytes_per_token(shape_70b, "fp8") == 327_680 // 2


# -- fitting ---------------------------------------------------------------------------------


def test_70b_bf16_weights_alone_do_not_fit_one_80gb_gpu(shape_70b):
    p = planner.plan(shape_70b, gpus=1, gpu_mem_gib=80, concurrency=1, context=1)
    # 141.1 GB = 131.4 GiB of weights > 80 GiB, whatever the KV cache.
    assert p.weights_bytes > 80 * GiB
    assert not _by_tp(p)[1].fits and p.recommended_tp is None
    assert any("weights alone" in w for w in p.warnings)


def test_70b_bf16_on_eight_80gb_gpus_needs_tp8_at_32k_by_24(shape_70b):
    # KV: 32768 x 24 = 786,432 tokens x 327,680 B = 257.7 GB = 240 GiB exactly. Weights 131.42 GiB.
    # Per GPU = (131.42 + 240) / TP + 3:  TP1 374.4, TP2 188.7, TP4 95.9, TP8 49.4 GiB; budget 70.4 GiB.
    # So TP 4 does not fit this worst case (24 sequences all at 32k); the KV cache, not the weights,
    # decides it. TP 4 holds 32.9 GiB of weights and room for (70.4-3-32.9)/2.5 = 13 full sequences.
    p = planner.plan(shape_70b, gpus=8, gpu_mem_gib=80)
    opts = _by_tp(p)
    assert sorted(opts) == [1, 2, 4, 8]
    assert p.kv_bytes_total == 240 * GiB
    assert [round(opts[t].per_gpu_bytes / GiB, 1) for t in (1, 2, 4, 8)] == [374.4, 188.7, 95.9, 49.4]
    assert [opts[t].fits for t in (1, 2, 4, 8)] == [False, False, False, True]
    assert p.recommended_tp == 8
    assert opts[4].max_sequences_at_context == 13
    assert opts[8].max_sequences_at_context == 40  # (70.4-3-16.43)/1.25 = 40.8


def test_70b_bf16_tp4_fits_at_smaller_concurrency_or_fp8_kv(shape_70b):
    # 12 sequences: KV 120 GiB -> TP4 32.9 + 30 + 3 = 65.9 GiB <= 70.4; TP2 65.7 + 60 + 3 = 128.7 does not.
    assert planner.plan(shape_70b, gpus=8, gpu_mem_gib=80, concurrency=12).recommended_tp == 4
    # fp8 KV halves the 240 GiB to 120 GiB: the same 65.9 GiB at TP4.
    assert planner.plan(shape_70b, gpus=8, gpu_mem_gib=80, kv_dtype="fp8").recommended_tp == 4


def test_70b_fp8_on_eight_80gb_gpus(shape_70b):
    # Weights 72.66 GB = 67.67 GiB. TP4: 16.92 + 60 + 3 = 79.9 GiB > 70.4; TP8: 8.46 + 30 + 3 = 41.5 fits.
    p = planner.plan(shape_70b, gpus=8, gpu_mem_gib=80, dtype="fp8")
    opts = _by_tp(p)
    assert p.weights_bytes == FP8_70B_BYTES
    assert round(opts[4].per_gpu_bytes / GiB, 1) == 79.9 and not opts[4].fits
    assert p.recommended_tp == 8
    assert p.notes and "embeddings, lm_head and norms stay bf16" in p.notes[0]


def test_70b_on_one_h200(shape_70b):
    # Budget 141 x 0.88 = 124.08 GiB. bf16: weights 131.4 GiB alone exceed it.
    # fp8: 124.08 - 3 - 67.67 = 53.4 GiB of KV room / 10 GiB per 32k sequence = 5 sequences, not 24.
    bf16 = planner.plan(shape_70b, gpus=1, gpu_mem_gib=141)
    fp8 = planner.plan(shape_70b, gpus=1, gpu_mem_gib=141, dtype="fp8")
    assert bf16.recommended_tp is None and _by_tp(bf16)[1].max_sequences_at_context == 0
    assert fp8.recommended_tp is None and _by_tp(fp8)[1].max_sequences_at_context == 5
    assert planner.plan(shape_70b, gpus=1, gpu_mem_gib=141, dtype="fp8", concurrency=5).recommended_tp == 1


def test_8b_at_defaults_needs_tp2_because_of_kv(shape_8b):
    # KV 786,432 tokens x 131,072 B = 96 GiB; weights 14.96 GiB. TP1 114.0 GiB > 70.4; TP2 58.5 fits.
    p = planner.plan(shape_8b, gpus=8, gpu_mem_gib=80)
    assert round(_by_tp(p)[1].per_gpu_bytes / GiB, 1) == 114.0
    assert p.recommended_tp == 2


def test_8b_fits_one_gpu_and_forced_tp_warns_over_sharding(shape_8b):
    # 8 sequences x 8192 tokens: KV 65,536 x 131,072 B = 8 GiB. TP1: 14.96 + 8 + 3 = 26.0 GiB fits.
    p = planner.plan(shape_8b, gpus=8, gpu_mem_gib=80, context=8192, concurrency=8)
    assert p.recommended_tp == 1 and p.warnings == []
    forced = planner.plan(shape_8b, gpus=8, gpu_mem_gib=80, context=8192, concurrency=8, tp=4)
    assert forced.recommended_tp == 1
    assert any("over-sharding" in w and "fits on one GPU" in w for w in forced.warnings)


def test_tp_that_does_not_divide_gpus_is_not_listed_unless_forced(shape_70b):
    p = planner.plan(shape_70b, gpus=6, gpu_mem_gib=80, dtype="fp8", concurrency=4)
    assert sorted(_by_tp(p)) == [1, 2, 3, 6]
    assert not any("does not divide" in w for w in p.warnings)
    forced = planner.plan(shape_70b, gpus=6, gpu_mem_gib=80, dtype="fp8", concurrency=4, tp=4)
    assert 4 in _by_tp(forced) and not _by_tp(forced)[4].divides_gpus
    assert any("TP 4 does not divide 6 GPUs" in w for w in forced.warnings)


def test_tp_splitting_heads_unevenly_is_never_recommended(shape_70b):
    # 8 KV heads / 3 is not whole: vLLM refuses TP 3 even where the memory would fit.
    p = planner.plan(shape_70b, gpus=6, gpu_mem_gib=80, dtype="fp8", concurrency=4)
    opts = _by_tp(p)
    assert opts[3].fits and not opts[3].vllm_accepts
    assert p.recommended_tp == 2  # 33.83 + 4 x 5 GiB + 3 = 56.8 GiB at TP2
    forced = planner.plan(shape_70b, gpus=6, gpu_mem_gib=80, dtype="fp8", concurrency=4, tp=3)
    assert any("vLLM refuses" in w for w in forced.warnings)


def test_tp_beyond_kv_heads_replicates_kv(shape_8b):
    p = planner.plan(shape_8b, gpus=16, gpu_mem_gib=80, tp=16, gpus_per_node=8)
    opts = _by_tp(p)
    # At TP 16 each GPU still holds one of the 8 KV heads: KV per GPU equals TP 8's, not half of it.
    assert opts[16].kv_replicated and opts[16].kv_heads_per_gpu == 1
    assert opts[16].kv_per_gpu_bytes == opts[8].kv_per_gpu_bytes
    assert any("replicated KV head" in w for w in p.warnings)


def test_tp_larger_than_a_node_warns(shape_70b):
    # 4 GPUs per node: the fitting TP 8 (bf16, defaults) spans two nodes.
    p = planner.plan(shape_70b, gpus=8, gpu_mem_gib=80, gpus_per_node=4)
    assert p.recommended_tp == 8 and _by_tp(p)[8].crosses_nodes
    assert any("cross nodes" in w for w in p.warnings)


def test_headroom_outside_ten_to_fifteen_percent_is_bad_input(shape_8b):
    with pytest.raises(ConfigError, match="headroom"):
        planner.plan(shape_8b, gpus=1, gpu_mem_gib=80, headroom=0.3)
    assert planner.plan(shape_8b, gpus=1, gpu_mem_gib=80, headroom=0.10).budget_per_gpu_bytes == math.floor(72 * GiB)


# -- config resolution -----------------------------------------------------------------------


def test_model_accepts_folder_file_and_shipped_name(tmp_path: Path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text((planner.CONFIGS_DIR / "llama-3.1-8b.json").read_text())
    shapes = [
        planner.load_shape(folder),
        planner.load_shape(folder / "config.json"),
        planner.load_shape("llama-3.1-8b"),
    ]
    assert {planner.param_counts(s).total for s in shapes} == {PARAMS_8B}


def test_missing_or_malformed_config_is_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no model config"):
        planner.load_shape(tmp_path / "nowhere")
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 4096, "num_attention_heads": 32}))
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        planner.load_shape(bad)


# -- CLI -------------------------------------------------------------------------------------


def test_cli_json_for_70b_fp8_on_eight_gpus():
    result = runner.invoke(
        app, ["plan", "--model", "llama-3.1-70b", "--gpus", "8", "--gpu-mem", "80", "--dtype", "fp8", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["weights_bytes"] == FP8_70B_BYTES
    assert data["kv_bytes_per_token"] == 327_680
    assert [row["tp"] for row in data["per_tp"]] == [1, 2, 4, 8]
    assert [row["fits"] for row in data["per_tp"]] == [False, False, False, True]
    assert all(row["per_gpu_bytes"] > 0 for row in data["per_tp"])
    assert data["recommended_tp"] == 8
    assert isinstance(data["warnings"], list)


def test_cli_table_names_units_and_recommendation():
    result = runner.invoke(
        app, ["plan", "--model", "llama-3.1-8b", "--gpus", "8", "--gpu-mem", "80"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "16.06 GB" in result.output and "GiB" in result.output
    assert "Recommended TP: 2" in result.output


def test_cli_exits_1_when_nothing_fits():
    result = runner.invoke(app, ["plan", "--model", "llama-3.1-70b", "--gpus", "1", "--gpu-mem", "80", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["recommended_tp"] is None and any("no TP fits" in w for w in data["warnings"])


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "no-such-model", "--gpus", "8", "--gpu-mem", "80"],
        ["--model", "llama-3.1-8b", "--gpus", "0", "--gpu-mem", "80"],
        ["--model", "llama-3.1-8b", "--gpus", "8", "--gpu-mem", "80", "--headroom", "0.5"],
        ["--model", "llama-3.1-8b", "--gpus", "8", "--gpu-mem", "80", "--dtype", "int4"],
    ],
    ids=["unknown-model", "zero-gpus", "headroom-out-of-range", "unknown-dtype"],
)
def test_cli_exits_2_on_bad_input(args):
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == 2, result.output
