"""The golden check's verdict and its report: versioned thresholds, PASS/FAIL over the set's
metrics, the outcome of a run, and the report (Markdown table + divergence plot) a person reads.

The thresholds, the verdict and the Markdown need only the standard library; matplotlib is
imported for the plot only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, read_toml
from pipeline.quality.golden_metrics import SideOutput, aggregate, case_metrics
from pipeline.quality.golden_set import GOLDEN_DIR, GoldenSet

DEFAULT_THRESHOLDS = "v1"

# --- thresholds and the verdict ----------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    metric: str
    op: str  # ">=" | "<="
    limit: float
    why: str = ""


@dataclass(frozen=True)
class Thresholds:
    version: str
    path: Path
    checks: list[Check]


def thresholds_path(prompts_dir: Path, version: str) -> Path:
    return Path(prompts_dir) / GOLDEN_DIR / f"thresholds-{version}.toml"


def load_thresholds(path: Path) -> Thresholds:
    """A thresholds file: ``version`` and one ``[checks.<metric>]`` table each with ``min`` or
    ``max`` (and ``why``)."""
    raw = read_toml(path, what="thresholds file")
    checks = []
    for metric, spec in (raw.get("checks") or {}).items():
        if not isinstance(spec, dict) or len({"min", "max"} & set(spec)) != 1:
            raise ConfigError(f"thresholds file {path}: [checks.{metric}] needs exactly one of min / max")
        op, limit = (">=", spec["min"]) if "min" in spec else ("<=", spec["max"])
        checks.append(Check(metric, op, float(limit), str(spec.get("why", "")).strip()))
    if not checks or "version" not in raw:
        raise ConfigError(f"thresholds file {path} needs a version and at least one [checks.*] table")
    return Thresholds(str(raw["version"]), Path(path), checks)


def verdict(aggregates: dict[str, Any], thresholds: Thresholds) -> tuple[str, list[dict[str, Any]]]:
    """PASS when every check holds. A metric that could not be measured (e.g. no shared prefix
    for |Δ logprob|) fails its check: the gate never passes on missing evidence."""
    results = []
    for c in thresholds.checks:
        if c.metric not in aggregates:
            raise ConfigError(f"thresholds {thresholds.path}: unknown metric {c.metric!r}")
        value = aggregates[c.metric]
        ok = value is not None and (value >= c.limit if c.op == ">=" else value <= c.limit)
        results.append({"metric": c.metric, "op": c.op, "limit": c.limit, "value": value, "ok": bool(ok)})
    return ("PASS" if all(r["ok"] for r in results) else "FAIL"), results


@dataclass
class Comparison:
    per_case: list[dict[str, Any]]
    aggregates: dict[str, Any]
    verdict: str
    checks: list[dict[str, Any]]


def compare(
    gset: GoldenSet, base: Sequence[SideOutput], cand: Sequence[SideOutput], thresholds: Thresholds
) -> Comparison:
    by_id = {c.id: c for c in gset.cases}
    if [o.case_id for o in base] != [o.case_id for o in cand] or set(by_id) != {o.case_id for o in base}:
        raise ConfigError("baseline and candidate outputs do not cover the same golden cases")
    per_case = [{"case_id": b.case_id, **case_metrics(by_id[b.case_id], b, c)} for b, c in zip(base, cand, strict=True)]
    agg = aggregate(per_case)
    v, checks = verdict(agg, thresholds)
    return Comparison(per_case, agg, v, checks)


# --- the outcome of a run --------------------------------------------------------------------


@dataclass
class GoldenOutcome:
    verdict: str
    mode: str
    golden_version: str
    thresholds_version: str
    baseline: dict[str, Any]
    candidate: dict[str, Any]
    comparison: Comparison
    report_dir: Path
    run_id: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        return self.report_dir / "report.md"

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "mode": self.mode,
            "golden_version": self.golden_version,
            "thresholds_version": self.thresholds_version,
            "run_id": self.run_id,
            "aggregates": self.comparison.aggregates,
            "checks": self.comparison.checks,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "report": str(self.report_path),
            "plot": str(self.report_dir / "divergence.png"),
            "seconds": self.seconds,
            "cases": self.comparison.per_case,
        }


# --- the report ---------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def report_markdown(outcome: GoldenOutcome, gset: GoldenSet, thresholds: Thresholds) -> str:
    """The report as Markdown: verdict, both configs, the gate's checks, the per-case table."""
    agg, cmp_ = outcome.comparison.aggregates, outcome.comparison
    b, c = outcome.baseline, outcome.candidate
    bs, cs = b.get("snapshot") or {}, c.get("snapshot") or {}
    lines = [
        f"# Golden check: {outcome.verdict}",
        "",
        f"Mode **{outcome.mode}** · golden set {gset.version} ({len(gset.cases)} cases) · thresholds "
        f"{thresholds.version} · top-{gset.logprobs} logprobs, greedy"
        + (f" · run {outcome.run_id}" if outcome.run_id is not None else ""),
        "",
        "| | baseline | candidate |",
        "|---|---|---|",
        f"| config | `{b['spec']}` ({b['mode']}) | `{c['spec']}` ({c['mode']}) |",
        f"| model | `{b['model']}` | `{c['model']}` |",
        f"| dtype | {bs.get('dtype', b['engine'].get('dtype'))} | {cs.get('dtype', c['engine'].get('dtype'))} |",
        f"| quantization | {bs.get('quantization') or '–'} | {cs.get('quantization') or '–'} |",
        f"| device / vLLM | {bs.get('device', '–')} / {bs.get('vllm_version', '–')} | {cs.get('device', '–')} / {cs.get('vllm_version', '–')} |",
    ]
    for side, d in (("baseline", b), ("candidate", c)):
        if d.get("derived"):
            der = d["derived"]
            lines.append(
                f"| {side} weights | {der.get('method', der.get('saved_mode', ''))} {der.get('params', '')} "
                f"(relative weight error {_fmt(der.get('relative_error'), 4)}) | |"
            )
    lines += ["", "## Gate", "", "| check | value | threshold | |", "|---|---|---|---|"]
    for r in cmp_.checks:
        lines.append(
            f"| {r['metric']} | {_fmt(r['value'], 4)} | {r['op']} {r['limit']:g} | {'ok' if r['ok'] else '**FAIL**'} |"
        )
    lines += ["", "## Set totals", "", "| metric | value |", "|---|---|"]
    for k, v in agg.items():
        lines.append(f"| {k} | {_fmt(v, 4)} |")
    lines += [
        "",
        "## Cases",
        "",
        "| case | exact | first div. | tokens b/c | vLLM rule | top-N agree | mean \\|Δlp\\| | ROUGE-L | cite J | coverage b→c |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in cmp_.per_case:
        lines.append(
            f"| {m['case_id']} | {_fmt(m['exact_match'])} | {_fmt(m['first_divergence'])} | "
            f"{m['tokens_baseline']}/{m['tokens_candidate']} | {'pass' if m['logprobs_close'] else 'fail'} | "
            f"{_fmt(m['top_n_agreement'])} | {_fmt(m['mean_abs_logprob_delta'], 4)} | {_fmt(m['rouge_l_f'])} | "
            f"{_fmt(m['citation_jaccard'])} | {_fmt(m['coverage_baseline'], 2)}→{_fmt(m['coverage_candidate'], 2)} |"
        )
    lines += [
        "",
        "![first divergence per case](divergence.png)",
        "",
        "*first div.*: index of the first output token where the two sides differ. *vLLM rule*: at that "
        f"token each side's choice is within the other's top-{gset.logprobs} (vLLM's `check_logprobs_close`). "
        "*top-N agree*: share of positions where that holds. *mean |Δlp|*: chosen-token logprob "
        "difference over the shared prefix. *coverage*: expected clause types found with a citation on a "
        "page the corpus manifest labels for them.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    outcome: GoldenOutcome, gset: GoldenSet, thresholds: Thresholds, outputs: dict[str, list[SideOutput]]
) -> Path:
    """``report.md`` and ``divergence.png`` in the outcome's report folder."""
    outcome.report_path.write_text(report_markdown(outcome, gset, thresholds), encoding="utf-8")
    plot_divergence(outcome, outcome.report_dir / "divergence.png")
    return outcome.report_path


def plot_divergence(outcome: GoldenOutcome, path: Path) -> Path:
    """One bar per case: the identical prefix, then the rest of the longer output; the first
    divergence marked green (a near-tie the vLLM rule allows) or red (not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cases = outcome.comparison.per_case
    height = 0.32 * len(cases) + 2.0
    fig, ax = plt.subplots(figsize=(10, height), dpi=100)
    for y, m in enumerate(cases):
        total = max(m["tokens_baseline"], m["tokens_candidate"], 1)
        div = m["first_divergence"]
        ax.barh(y, total if div is None else div, color="#4c78a8", height=0.6)
        if div is not None:
            ax.barh(y, total - div, left=div, color="#d3d3d3", height=0.6)
            ax.plot([div], [y], marker="D", color="#2ca02c" if m["logprobs_close"] else "#d62728", markersize=6)
    ax.set_yticks(range(len(cases)), [m["case_id"] for m in cases], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("output tokens")
    fig.legend(
        handles=[
            Patch(color="#4c78a8", label="identical prefix"),
            Patch(color="#d3d3d3", label="after the first divergence"),
            Line2D([], [], marker="D", color="#2ca02c", linestyle="", label="divergence within top-N (vLLM rule)"),
            Line2D([], [], marker="D", color="#d62728", linestyle="", label="divergence outside top-N"),
        ],
        fontsize=7,
        loc="lower center",
        ncol=4,
        frameon=False,
    )
    ax.set_title(f"{outcome.verdict} · {outcome.mode} · first divergence per case", fontsize=10)
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1))  # room for the legend below the axes
    fig.savefig(path)
    plt.close(fig)
    return path
