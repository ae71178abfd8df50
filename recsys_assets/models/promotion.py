"""The promotion gate, the evaluation's files and picture: plain functions the assets and CLI share."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from recsys_assets.models.fusion import Fusion

MODEL_NAMES = ("item2vec", "two_tower", "ranker")  # promoted together: the serving pipeline
GATE_METRIC = "ndcg@10"
# In an evaluation's validation report: the rerank's mean per-user gain over popularity and its standard error.
GATE_EVIDENCE = "rerank_vs_popularity"
GATE_TAG = "gate_ndcg_at_10"  # on promoted versions: the gate metric they won with (for the record)
GATE_MODEL = "rerank"  # what serving answers with: two-tower retrieval re-ordered by the ranker
LATEST = "latest.json"


@dataclass
class Decision:
    promote: bool
    reason: str
    candidate: float
    popularity: float
    champion: float | None
    versions: dict[str, str]
    previous_champions: dict[str, str | None]
    # Neither the candidate nor the champion (judged on this split) beats popularity: serve popularity.
    retire_champion: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def champions_after(self) -> dict[str, str | None]:
        """The champion versions once the decision is applied ({}: none, the release serves popularity)."""
        return self.versions if self.promote else {} if self.retire_champion else self.previous_champions


def gate(report: dict, previous: dict[str, str | None]) -> Decision:
    """Promote only when the candidate beats popularity by more than noise and the current champion, strictly,
    on the validation period, the champion evaluated on the candidate's own split (`report["champion"]`: same
    period, same users), never a number recorded on an older split; when the candidate is refused, retire the
    champion if it does not beat popularity there (the release then serves popularity). The holdout is
    reported, never used to decide.

    More than noise: by more than one standard error of the paired per-user difference (`GATE_EVIDENCE`; none
    recorded: by anything). A few dozen validation users cannot tell a model from popularity, and the rerank's
    fusion is the best of a grid on those same users, so its margin is flattered: on a sparse sample of
    MovieLens (74 validation users) the two-tower won validation by 0.007 NDCG@10 (0.030 vs 0.024) and served
    0.68x popularity on the holdout. Popularity is the safe answer until a model wins by more than noise; a
    champion is retired only when it no longer beats popularity at all (promoting needs more evidence than
    keeping, so the release does not flip on noise)."""
    models = report["validation"]["models"]
    versions = report["versions"]
    candidate = models.get(GATE_MODEL, models.get("two_tower", {})).get(GATE_METRIC, 0.0)
    popularity = models["popularity"][GATE_METRIC]
    noise = report["validation"].get(GATE_EVIDENCE, {}).get("standard_error", 0.0)
    has_champion = any(previous.values())
    judged = report.get("champion") or {}
    champion_metric = judged.get("validation", {}).get("models", {}).get(GATE_MODEL, {}).get(GATE_METRIC)
    if has_champion and versions == previous:
        verdict, reason = False, f"the candidate {versions} already is the champion"
    elif candidate - popularity <= noise:
        verdict, reason = False, (f"{GATE_MODEL} {GATE_METRIC} {candidate:.4f} does not beat popularity "
                                  f"{popularity:.4f} on validation" + (
                                      f" by more than noise (one standard error of the per-user difference: "
                                      f"{noise:.4f})" if candidate > popularity else ""))
    elif has_champion and judged.get("versions") != previous:
        verdict, reason = False, (f"the evaluation judged champion {judged.get('versions')}, the champion now is "
                                  f"{previous}: re-materialize model_evaluation")
    elif champion_metric is not None and candidate <= champion_metric:
        verdict, reason = False, (f"{candidate:.4f} does not beat the champion's {champion_metric:.4f} on the same "
                                  "validation period")
    else:
        verdict = True
        reason = f"{candidate:.4f} beats popularity {popularity:.4f} (by more than its noise {noise:.4f})" + (
            f" and the champion's {champion_metric:.4f} on the same validation period" if champion_metric is not None
            else " (the champion could not be judged on this split)" if has_champion else " (first champion)")
        if "choices" in report:  # what the promoted pipeline serves, in words
            reason += f"; {GATE_MODEL} = {Fusion(**report['choices']['fusion']).describe()}"
    retire = (not verdict and has_champion and judged.get("versions") == previous and champion_metric is not None
              and champion_metric <= popularity)
    if retire:
        reason += (f"; the champion's {champion_metric:.4f} does not beat popularity {popularity:.4f} on this "
                   "validation period either: popularity is served until a model beats it")
    return Decision(verdict, reason, candidate, popularity, champion_metric, versions, previous, retire)


def describe_evidence(evidence: dict) -> str:
    """The gate's evidence in words: the rerank's gain over popularity on validation and its noise."""
    gain, noise = evidence["gain"], evidence["standard_error"]
    margin = gain / noise if noise else float("inf") if gain > 0 else 0.0
    verdict = "more than noise" if gain > noise else "within noise: the gate does not promote it"
    return (f"{GATE_MODEL} vs popularity on validation: {GATE_METRIC} {gain:+.4f} on average over "
            f"{evidence['users']} users, {margin:.1f} standard errors ({noise:.4f}): {verdict}")


BASELINE_MODELS = ("popularity", "recent_popularity", "ease", "item_knn")


def baseline_comparison(report: dict) -> dict | None:
    """The served pipeline's NDCG@10 against the best baseline of the same evaluation (None when the
    evaluation has no learned pipeline): whether the learned models pay for themselves."""
    models = report["models"]
    served = models.get(GATE_MODEL)
    present = [name for name in BASELINE_MODELS if name in models]
    if served is None or not present:
        return None
    best = max(present, key=lambda name: models[name][GATE_METRIC])
    ratio = served[GATE_METRIC] / models[best][GATE_METRIC] if models[best][GATE_METRIC] else float("inf")
    return {"pipeline": GATE_MODEL, GATE_METRIC: served[GATE_METRIC], "best_baseline": best,
            f"best_baseline_{GATE_METRIC}": models[best][GATE_METRIC], "ratio": round(ratio, 4),
            "pays_for_itself": ratio > 1.0}


def describe_comparison(comparison: dict) -> str:
    verdict = ("beats" if comparison["pays_for_itself"] else "does NOT beat")
    return (f"{comparison['pipeline']} {GATE_METRIC} {comparison[GATE_METRIC]:.4f} = {comparison['ratio']:.2f}x the "
            f"best baseline ({comparison['best_baseline']} {comparison[f'best_baseline_{GATE_METRIC}']:.4f}): the "
            f"learned pipeline {verdict} it")


def write_report(folder: Path, day: str, report: dict) -> Path:
    """The day's evaluation as `<day>.json` and `latest.json` (written aside, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    for name in (f"{day}.json", LATEST):
        aside = folder / f".{name}.tmp"
        aside.write_text(text)
        aside.replace(folder / name)
    return folder / f"{day}.json"


def read_report(folder: Path, day: str) -> dict:
    """The evaluation of `day` (`write_report`)."""
    return json.loads((folder / f"{day}.json").read_text())


def read_latest(folder: Path) -> dict | None:
    path = folder / LATEST
    return json.loads(path.read_text()) if path.exists() else None


def metrics_table(report: dict) -> list[dict]:
    return [{"model": name, **{k: round(v, 4) for k, v in values.items()}} for name, values in report["models"].items()]


def plot_png(report: dict) -> bytes:
    """Bar chart of Recall@10, NDCG@10 and Recall@50 per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["models"])
    metrics = ["recall@10", "ndcg@10", "recall@50"]
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        ax.bar([x + i * width for x in range(len(names))], [report["models"][n][metric] for n in names], width,
               label=metric)
    ax.set_xticks([x + width for x in range(len(names))], names)
    ax.set_title(f"holdout of {report['split']['holdout_users']} users, boundary {report['split']['boundary_timestamp']}")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def png_markdown(png: bytes) -> str:
    return f"![evaluation](data:image/png;base64,{base64.b64encode(png).decode()})"
