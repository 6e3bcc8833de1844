"""The ``learned`` exit policy's model: one small logistic regression per exit (numpy only).

At exit k it predicts the probability that exit k's hypothesis equals the last exit's, from
the numbers every evaluated exit has already (:data:`INPUTS`, a subset of
:data:`espnet_early_exit.exit_features.FEATURES`: frame statistics, hypothesis length, blank
ratio, edit distance and agreement with the previous exit; the exit index is the choice of
model). The target needs no reference transcript, so it can be fitted on any untranscribed
in-domain audio decoded once at every exit (:func:`fit_from_all_exits`;
``python -m espnet_early_exit.bin.fit_exit_policy``). The model is a JSON file
(:data:`DEFAULT_NAME` beside the model's file) that the decoder loads by name.

Fitting: inputs standardised per exit, L2-penalised log-likelihood maximised by Newton's
method (a few dozen iterations at most); an exit whose targets are all equal gets a constant
probability (their smoothed mean).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

DEFAULT_NAME = "exit_policy.json"
INPUTS = ("n_frames", "entropy", "max_posterior", "blank_ratio", "hyp_len", "edits_prev",
          "streak")


def _design(features: Sequence[Dict[str, float]]) -> np.ndarray:
    """(n, len(INPUTS) + 1) inputs: INPUTS, plus an "agrees with the previous exit" flag."""
    rows = [[f[name] for name in INPUTS] + [float(f["edits_prev"] == 0)] for f in features]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(INPUTS) + 1)


@dataclass
class LogisticModel:
    """p = sigmoid(w . (x - mean) / scale + b)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias}

    @classmethod
    def from_dict(cls, d: dict) -> "LogisticModel":
        return cls(*(np.asarray(d[key], dtype=np.float64) for key in ("mean", "scale", "weights")),
                   float(d["bias"]))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> LogisticModel:
    """L2-penalised logistic regression by Newton's method (standardised inputs; the bias
    is not penalised)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-12] = 1.0
    n, d = x.shape
    rate = (y.sum() + 0.5) / (n + 1.0)  # smoothed: finite logit when all targets agree
    if y.min() == y.max():
        return LogisticModel(mean, scale, np.zeros(d), math.log(rate / (1 - rate)))
    a = np.hstack([(x - mean) / scale, np.ones((n, 1))])
    w = np.zeros(d + 1)
    w[-1] = math.log(rate / (1 - rate))
    penalty = np.full(d + 1, l2 * n)
    penalty[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -50.0, 50.0)))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return LogisticModel(mean, scale, w[:-1], float(w[-1]))


class ExitClassifier:
    """``{exit: LogisticModel}``; :meth:`probability` of one exit's view's features."""

    def __init__(self, models: Dict[int, LogisticModel], info: dict = None):
        self.models = dict(models)
        self.info = dict(info or {})

    def probability(self, k: int, features: Dict[str, float]) -> float:
        """P(exit k's hypothesis equals the last exit's); 1.0 at an exit without a model
        (the last exit)."""
        if k not in self.models:
            return 1.0
        return float(self.models[k].predict(_design([features]))[0])

    def view_probability(self, view) -> float:
        """The ``learned`` policy's number at an exit: :meth:`probability` of its
        :class:`~espnet_early_exit.exit_features.ExitView`."""
        return self.probability(view.exit, view.features())

    def check_exits(self, exit_layers: Sequence[int], path: Union[str, Path]) -> None:
        """ValueError (naming ``path``, the fit's file) when the fit has a model for an exit
        that is not one of ``exit_layers`` before the last: another model's fit."""
        fitted = sorted(self.models)
        if not set(fitted) <= set(list(exit_layers)[:-1]):
            raise ValueError(f"{path} was fitted for exits {fitted}, but the model's exits are "
                             f"{list(exit_layers)}: fit it again for this model "
                             "(python -m espnet_early_exit.bin.fit_exit_policy)")

    def save(self, path: Union[str, Path]) -> Path:
        from espnet_early_exit.fileio import atomic_write_text

        data = {"kind": "per_exit_logistic_regression", "inputs": list(INPUTS) + ["agrees_prev"],
                "info": self.info, "exits": {str(k): m.to_dict() for k, m in self.models.items()}}
        return atomic_write_text(path, json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "ExitClassifier":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("kind") != "per_exit_logistic_regression":
            raise ValueError(f"{path}: not a learned exit policy (kind {data.get('kind')!r})")
        return cls({int(k): LogisticModel.from_dict(m) for k, m in data["exits"].items()},
                   data.get("info"))


def fit_from_all_exits(data, l2: float = 1e-2) -> ExitClassifier:
    """Fit on an all-exits pass (:class:`espnet_early_exit.derive.AllExits`): at each exit
    but the last, the target of an utterance is whether its text equals the last exit's."""
    last = data.exits[-1]
    utts = data.utts
    texts = {k: {u: " ".join(data.tables[k]["text"].get(u, "").split()) for u in utts}
             for k in data.exits}
    traces = {u: data.trace(u) for u in utts}
    models: Dict[int, LogisticModel] = {}
    stats: List[dict] = []
    for i, k in enumerate(data.exits[:-1]):
        x = _design([traces[u][i].features() for u in utts])
        y = np.asarray([texts[k][u] == texts[last][u] for u in utts], dtype=np.float64)
        models[k] = fit_logistic(x, y, l2)
        p = models[k].predict(x)
        stats.append({"exit": k, "n": len(utts), "equal_to_last": float(y.mean()),
                      "train_accuracy": float(((p >= 0.5) == (y > 0.5)).mean())})
    return ExitClassifier(models, {"fitted_on": str(data.root), "l2": l2, "per_exit": stats})
