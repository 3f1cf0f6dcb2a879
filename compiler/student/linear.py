"""The linear student of a label task: logistic regression over TF-IDF word features (scikit-learn), and its
ONNX graph (skl2onnx), which the package runs as distillc_runtime.linear does.

The texts are reduced to words by distillc_runtime.linear.words on both sides, so the graph's tokenizer only
splits at spaces. Unigrams and bigrams, raw term frequencies (skl2onnx's graph for `sublinear_tf` differs from
scikit-learn's by up to 8e-3 in probability); the regularization strength is chosen by cross-validation on
the training rows, scored by the spec's metric.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from distillc_runtime.linear import CLASSIFIER, words

STRENGTHS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # logistic regression's C, tried by cross-validation
FOLDS = 5
SCORING = {"accuracy": "accuracy", "macro_f1": "f1_macro", "exact_match": "accuracy"}
SPACES = r"[^ ]+"  # the graph's tokens: words() joined them with single spaces
OPSETS = {"": 17, "ai.onnx.ml": 3}


def fit(texts: list[str], labels: list[str], metric: str, seed: int) -> tuple[Any, dict[str, Any]]:
    """The pipeline fit on every row, with C chosen by stratified cross-validation: (pipeline, what was chosen)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(lowercase=False, token_pattern=SPACES, ngram_range=(1, 2))),
            ("classifier", LogisticRegression(max_iter=2000, random_state=seed)),
        ]
    )
    fewest = min(Counter(labels).values())
    folds = min(FOLDS, fewest)
    rows = [words(t) for t in texts]
    if folds < 2:  # a label seen once cannot be in both a fold's training and test part: no search
        pipeline.fit(rows, labels)
        return pipeline, {"C": pipeline.named_steps["classifier"].C, "cv_score": None, "folds": 0}
    search = GridSearchCV(
        pipeline,
        {"classifier__C": list(STRENGTHS)},
        scoring=SCORING.get(metric, "accuracy"),
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and ill-defined-F1 notes on tiny folds
        search.fit(rows, labels)
    chosen = {"C": search.best_params_["classifier__C"], "cv_score": round(float(search.best_score_), 6)}
    return search.best_estimator_, {**chosen, "folds": folds}


def predict(pipeline: Any, texts: list[str]) -> tuple[list[str], Any]:
    """scikit-learn's labels and probabilities (columns in the order of `classes(pipeline)`) for raw texts."""
    rows = [words(t) for t in texts]
    return [str(label) for label in pipeline.predict(rows)], pipeline.predict_proba(rows)


def classes(pipeline: Any) -> list[str]:
    return [str(c) for c in pipeline.classes_]


def features(pipeline: Any) -> int:
    """Distinct words and word pairs of the training rows: the vectorizer's vocabulary."""
    return int(pipeline.named_steps["tfidf"].idf_.size)


def parameters(pipeline: Any) -> int:
    """Weights of the model: each feature's IDF, and each label's coefficient per feature and its bias."""
    classifier = pipeline.named_steps["classifier"]
    return features(pipeline) + int(classifier.coef_.size + classifier.intercept_.size)


def write_model(pipeline: Any, out: Path) -> int:
    """model.onnx (texts in, label and probabilities out) and classifier.json in `out`: the package's model
    directory. Returns the graph's bytes."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    graph = to_onnx(
        pipeline,
        initial_types=[("input", StringTensorType([None, 1]))],
        options={TfidfVectorizer: {"tokenexp": SPACES}, LogisticRegression: {"zipmap": False}},
        target_opset=OPSETS,
    )
    data = graph.SerializeToString()
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(data)
    config = {
        "kind": "linear",
        "labels": classes(pipeline),
        "features": features(pipeline),
        "parameters": parameters(pipeline),
    }
    (out / CLASSIFIER).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return len(data)
