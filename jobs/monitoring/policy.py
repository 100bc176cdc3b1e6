"""The promotion policy of the retraining loop: figures of a model on held-out readings, and the decision.

``figures(scores, flags, labels, drift)`` measures one model on the held-out readings;
``decide(champion, challenger, policy)`` says whether the challenger replaces the champion. The
challenger is promoted when every check holds:

1. drift resolved: the challenger's max PSI on the held-out readings (against its own training
   baseline) is below ``drift_psi``: what it learnt describes the recent data;
2. false alarms: its false-alarm rate on the normal held-out readings is at most the champion's
   plus ``far_tolerance``;
3. with at least ``min_faults`` fault-labelled held-out readings, each model at its own threshold
   (what a job scoring with it sees): at the same recall (the challenger's at least the
   champion's minus ``recall_tolerance``) its precision is at least the champion's minus
   ``precision_tolerance``; with a lower recall, its F1 must be higher (recall is traded for
   precision only when that is a better balance);
4. it is better somewhere: a lower false-alarm rate, a higher recall, precision or F1, or the
   champion drifted (its own max PSI at or above ``drift_psi``) and the challenger does not.

Without a champion (or with one that cannot score the topic) the challenger is promoted as is.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jobs.monitoring.metrics import Confusion, is_fault


@dataclass(frozen=True)
class Policy:
    drift_psi: float = 0.2
    far_tolerance: float = 0.001
    precision_tolerance: float = 0.02
    recall_tolerance: float = 0.02
    min_faults: int = 20

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def figures(scores: np.ndarray, flags: np.ndarray, labels: Sequence[Any] | None,
            drift: dict[str, Any] | None = None) -> dict[str, Any]:
    """One model on the held-out readings: readings, flagged share, false-alarm rate on the normal
    ones (every reading when there are no labels), precision/recall/F1 where faults are labelled,
    score quantiles and the drift of the readings against the model's baseline."""
    flags = np.asarray(flags, dtype=bool)
    faults = np.array([is_fault(v) for v in labels], dtype=bool) if labels is not None else np.zeros(len(flags), bool)
    counts = Confusion()
    for flagged, fault in zip(flags, faults):
        counts.add(bool(flagged), bool(fault))
    out = {"rows": int(len(flags)), "flagged": int(flags.sum()),
           "flagged_rate": float(flags.mean()) if len(flags) else None, "labelled": labels is not None,
           **counts.figures(),
           "score_quantiles": {f"p{q}": float(np.quantile(scores, q / 100)) for q in (50, 90, 99)} if len(scores)
           else None}
    if drift is not None:
        out["max_psi"], out["max_psi_feature"] = drift.get("max_psi"), drift.get("max_feature")
    return out


@dataclass(frozen=True)
class Decision:
    promote: bool
    checks: list[dict[str, Any]]

    @property
    def summary(self) -> str:
        failed = [c["detail"] for c in self.checks if not c["ok"]]
        return "; ".join(failed) if failed else "; ".join(c["detail"] for c in self.checks)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def decide(champion: dict[str, Any] | None, challenger: dict[str, Any], policy: Policy = Policy()) -> Decision:
    """Whether ``challenger`` replaces ``champion`` (figures of ``figures()`` on the same readings)."""
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    psi = challenger.get("max_psi")
    check("drift", psi is None or psi < policy.drift_psi,
          f"challenger max PSI {_f(psi)} ({challenger.get('max_psi_feature')}) "
          f"{'<' if psi is None or psi < policy.drift_psi else '>='} {policy.drift_psi:g}")
    if champion is None:
        check("champion", True, "no champion that can score the topic: nothing to compare with")
        return Decision(all(c["ok"] for c in checks), checks)
    ch_far, cp_far = challenger["false_alarm_rate"], champion["false_alarm_rate"]
    far_ok = ch_far is None or cp_far is None or ch_far <= cp_far + policy.far_tolerance
    check("false_alarms", far_ok, f"false-alarm rate {_f(ch_far)} vs champion {_f(cp_far)} "
                                  f"(tolerance {policy.far_tolerance:g})")
    labelled = challenger["faults"] >= policy.min_faults
    better = [ch_far is not None and cp_far is not None and ch_far < cp_far]
    if labelled:
        ch_r, cp_r = challenger["recall"] or 0.0, champion["recall"] or 0.0
        ch_p, cp_p = challenger["precision"] or 0.0, champion["precision"] or 0.0
        if ch_r >= cp_r - policy.recall_tolerance:
            check("precision", ch_p >= cp_p - policy.precision_tolerance,
                  f"at the same recall ({ch_r:.4f} vs champion {cp_r:.4f}, tolerance {policy.recall_tolerance:g}): "
                  f"precision {ch_p:.4f} vs champion {cp_p:.4f} (tolerance {policy.precision_tolerance:g})")
        else:
            ch_f1, cp_f1 = challenger["f1"] or 0.0, champion["f1"] or 0.0
            check("f1", ch_f1 > cp_f1, f"lower recall ({ch_r:.4f} vs champion {cp_r:.4f}): F1 {ch_f1:.4f} vs "
                                       f"champion {cp_f1:.4f} must be higher")
        better += [ch_r > cp_r, ch_p > cp_p, (challenger["f1"] or 0.0) > (champion["f1"] or 0.0)]
    else:
        check("labels", True, f"{challenger['faults']} fault-labelled held-out readings (< {policy.min_faults}): "
                              f"precision and recall not compared")
    champion_psi = champion.get("max_psi")
    drift_resolved = champion_psi is not None and champion_psi >= policy.drift_psi and (
        psi is None or psi < policy.drift_psi)
    better.append(drift_resolved)
    check("better", any(better), "better: " + ", ".join(
        name for name, b in zip(["false alarms", "recall", "precision", "F1"][:len(better) - 1] + ["drift resolved"],
                                better) if b) if any(better) else
          f"no figure better than the champion's (champion max PSI {_f(champion_psi)})")
    return Decision(all(c["ok"] for c in checks), checks)
