"""Real FP8 against BF16 on a GPU, measured with the golden set's own metrics and thresholds.

Needs only PyTorch (and transformers) on the GPU host, no vLLM:

    python3 scripts/gpu/golden_gpu.py [--model DIR] [--layers 8] [--max-new-tokens 96] [--out DIR]

Three runs of the golden prompts, greedy with top-5 logprobs, on one Llama-shaped model:

* ``bf16``          the baseline;
* ``emulated-fp8``  Linear weights through e4m3 and back (``pipeline.quality.quantize.fp8_roundtrip``),
                    BF16 GEMMs: exactly what the CPU gate's fp8 candidate runs;
* ``real-fp8``      FP8 tensor-core GEMMs (``torch._scaled_mm``): e4m3 weights with one scale per
                    output channel and e4m3 activations with one dynamic scale per token (vLLM's
                    FP8-dynamic W8A8 scheme; ``--granularity tensor`` gives vLLM's online
                    ``quantization="fp8"``: one scale per weight tensor and per activation tensor).

Each candidate is compared with the baseline by ``pipeline.quality.golden_verdict.compare`` under
``prompts/golden/thresholds-v1.toml``; real-fp8 against emulated-fp8 shows what quantizing the
activations adds to the weight rounding the CPU emulation covers.

Without ``--model`` the weights are random (Llama-3.1-8B layer shapes, ``--layers`` of them, lm_head
scaled so the next-token distribution is peaked like a trained model's) and prompts are fed as
UTF-8 byte ids: the numbers then measure kernel numerics, not language. With ``--model`` (a
Hugging Face Llama folder) the prompts go through its chat template. No JSON grammar here, so the
task metrics (citations, coverage) only mean something with a real model.

vLLM's own FP8 kernels are measured by ``contractsum golden --candidate fp8:real``, which
``scripts/gpu/golden.sh`` runs before this script. Writes ``golden_gpu.json`` to ``--out`` (default
``$OUT`` or the current folder) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from pipeline.quality import golden_metrics as GM  # noqa: E402
from pipeline.quality import golden_set as GS  # noqa: E402
from pipeline.quality import golden_verdict as GV  # noqa: E402
from pipeline.quality.quantize import FP8_E4M3_MAX, fp8_roundtrip, is_quantized_weight  # noqa: E402
from pipeline.review.prompts import load_template  # noqa: E402

LLAMA31_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
)
TINY = dict(
    hidden_size=256,
    intermediate_size=512,
    num_attention_heads=8,
    num_key_value_heads=4,
    vocab_size=4096,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
)


class FP8Linear(torch.nn.Module):
    """A Linear whose GEMM runs in FP8 (e4m3) with dynamic activation scales."""

    def __init__(self, linear: torch.nn.Linear, granularity: str) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        amax = w.abs().amax(dim=1, keepdim=True) if granularity == "channel" else w.abs().amax().reshape(1, 1)
        scale = torch.where(amax > 0, amax / FP8_E4M3_MAX, torch.ones_like(amax))
        q = (w / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
        # _scaled_mm wants the second operand column-major: the transpose of a row-major (out, in).
        self.register_buffer("weight_t", q.t())
        self.register_buffer("weight_scale", scale.t().contiguous() if granularity == "channel" else scale.reshape(()))
        self.bias = linear.bias
        self.granularity = granularity
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        m = x2.shape[0]
        pad = (-m) % 16  # FP8 GEMMs want dimensions in multiples of 16
        if pad:
            x2 = torch.nn.functional.pad(x2, (0, 0, 0, pad))
        if self.granularity == "channel":
            a_scale = (x2.abs().amax(dim=1, keepdim=True) / FP8_E4M3_MAX).clamp(min=1e-12)
        else:
            a_scale = (x2.abs().amax() / FP8_E4M3_MAX).clamp(min=1e-12).reshape(())
        xq = (x2 / a_scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(xq, self.weight_t, scale_a=a_scale, scale_b=self.weight_scale, out_dtype=torch.bfloat16)
        out = out[:m]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)


def build_model(args, device: str):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if args.model:
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).to(device).eval()
    shape = TINY if args.shape == "tiny" else LLAMA31_8B
    cfg = LlamaConfig(**shape, num_hidden_layers=args.layers, max_position_embeddings=8192, tie_word_embeddings=False)
    torch.manual_seed(args.seed)
    with torch.device(device):  # initialised where it runs: billions of random draws are slow on a CPU
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    with torch.no_grad():
        # A trained model's next-token distribution is peaked; random init is near-uniform, where
        # any rounding flips the argmax and every variant would diverge at the first token.
        model.lm_head.weight.mul_(args.logit_scale)
    return model.to(device).eval()


def apply_variant(model, variant: str, granularity: str) -> int:
    """Change the decoder layers' Linear modules in place; returns how many were changed."""
    if variant == "bf16":
        return 0
    changed = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}.weight" if name else f"{child_name}.weight"
            if not isinstance(child, torch.nn.Linear) or not is_quantized_weight(full, 2):
                continue
            if variant == "emulated-fp8":
                with torch.no_grad():
                    child.weight.copy_(fp8_roundtrip(child.weight, granularity))
            elif variant == "real-fp8":
                setattr(module, child_name, FP8Linear(child, granularity))
            changed += 1
    return changed


def prompt_ids(gset: GS.GoldenSet, tokenizer) -> list[list[int]]:
    templates = {
        # The production map template, its clause slot filled by the default playbook (as the engine sees it).
        "summarize": load_template(REPO / "prompts", "summarize", gset.params["summarize_template"]).model_dump(),
        "find_clause": tomllib.loads((gset.directory / "find_clause.toml").read_text()),
    }
    out = []
    for case in gset.cases:
        t = templates[case.kind]
        user = t["user"].replace(t["placeholder"], case.rendered())
        if case.clause_type:
            user = user.replace("{clause_type}", case.clause_type).replace(
                "{clause_label}", case.clause_type.replace("_", " ")
            )
        messages = [{"role": "system", "content": t["system"]}, {"role": "user", "content": user}]
        if tokenizer is not None:
            # As pipeline.review.prompts.Renderer: the chat template's text, then its tokens (it carries BOS).
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
        else:
            text = f"{t['system']}\n\n{user}\n\n"
            out.append([b + 3 for b in text.encode("utf-8")])
    return out


@torch.no_grad()
def generate(
    model, gset: GS.GoldenSet, prompts: list[list[int]], max_new: int, tokenizer, device: str
) -> list[GM.SideOutput]:
    """Greedy decoding with a KV cache, one prompt at a time, top-N logprobs per step."""
    eos = set()
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    outs = []
    for case, ids in zip(gset.cases, prompts, strict=True):
        x = torch.tensor([ids], device=device)
        past = None
        tokens: list[int] = []
        lps: list[dict[int, float]] = []
        for _ in range(max_new):
            res = model(input_ids=x, past_key_values=past, use_cache=True)
            past = res.past_key_values
            logp = torch.log_softmax(res.logits[0, -1].float(), dim=-1)
            top = torch.topk(logp, gset.logprobs)
            tok = int(top.indices[0])
            lps.append({int(i): float(v) for i, v in zip(top.indices, top.values, strict=True)})
            tokens.append(tok)
            if tok in eos:
                break
            x = torch.tensor([[tok]], device=device)
        text = (
            tokenizer.decode(tokens, skip_special_tokens=True) if tokenizer is not None else " ".join(map(str, tokens))
        )
        outs.append(GM.SideOutput(case.id, text, tokens, lps, "stop"))
    return outs


def summary_line(name: str, cmp: GV.Comparison) -> str:
    a = cmp.aggregates
    keys = (
        "exact_match_rate",
        "logprobs_close_rate",
        "top_n_agreement",
        "mean_abs_logprob_delta",
        "median_first_divergence",
        "rouge_l_f",
    )
    return f"{name:28s} {cmp.verdict}  " + "  ".join(
        f"{k}={a[k]:.4f}" if isinstance(a[k], float) else f"{k}={a[k]}" for k in keys
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="Hugging Face Llama checkpoint folder (default: random Llama-3.1-8B-shaped weights)")
    p.add_argument("--layers", type=int, default=8, help="decoder layers of the random model")
    p.add_argument(
        "--shape", choices=["llama3-8b", "tiny"], default="llama3-8b", help="layer shapes of the random model"
    )
    p.add_argument("--logit-scale", type=float, default=3.0, help="lm_head multiplier of the random model")
    p.add_argument("--granularity", choices=["channel", "tensor"], default="channel")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--cases", type=int, default=0, help="only the first N golden cases (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()

    device = args.device
    info = {"device": device, "torch": torch.__version__, "args": vars(args)}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
        if tuple(info["capability"]) < (8, 9):
            print("warning: FP8 tensor-core GEMMs need compute capability 8.9+ (Ada, Hopper)", file=sys.stderr)
    gset = GS.load_golden_set(REPO / "prompts", "v1")
    if args.cases:
        gset = GS.GoldenSet(gset.version, gset.directory, gset.params, gset.cases[: args.cases], gset.built_from)
    thresholds = GV.load_thresholds(GV.thresholds_path(REPO / "prompts", "v1"))
    tokenizer = None
    if args.model:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = prompt_ids(gset, tokenizer)
    info["prompt_tokens"] = [len(x) for x in prompts]

    runs: dict[str, list[GM.SideOutput]] = {}
    for variant in ("bf16", "emulated-fp8", "real-fp8"):
        model = build_model(args, device)
        changed = apply_variant(model, variant, args.granularity)
        t0 = time.perf_counter()
        runs[variant] = generate(model, gset, prompts, args.max_new_tokens, tokenizer, device)
        seconds = time.perf_counter() - t0
        info[f"{variant}_seconds"] = round(seconds, 2)
        info[f"{variant}_linear_changed"] = changed
        print(
            f"{variant}: {changed} Linear modules changed, {sum(len(o.token_ids) for o in runs[variant])} tokens in {seconds:.1f} s",
            flush=True,
        )
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

    results = {"info": info, "comparisons": {}}
    pairs = [
        ("bf16 -> emulated-fp8", "bf16", "emulated-fp8"),
        ("bf16 -> real-fp8", "bf16", "real-fp8"),
        ("emulated-fp8 -> real-fp8", "emulated-fp8", "real-fp8"),
    ]
    for name, a, b in pairs:
        cmp = GV.compare(gset, runs[a], runs[b], thresholds)
        results["comparisons"][name] = {
            "verdict": cmp.verdict,
            "aggregates": cmp.aggregates,
            "checks": cmp.checks,
            "cases": cmp.per_case,
        }
        print(summary_line(name, cmp), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "golden_gpu.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {out / 'golden_gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
