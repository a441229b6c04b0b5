"""Train the example card-fraud model and write its reference profile.

Usage:
    python train.py [--out artifacts] [--rows 20000] [--seed 42] [--model-version 1.0.0]

Writes into --out:
    model.joblib   the fitted scikit-learn pipeline (one-hot + gradient boosting)
    train.csv      the training rows, with `label` and the model's `prediction`
    profile.json   the Drover reference profile (version 1) of the training rows

The data generator (`generate_transactions`) is importable without scikit-learn:
traffic.py uses it to send requests drawn from the same distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent

NUMERIC_FEATURES = [
    "amount",
    "age",
    "account_age_days",
    "transactions_24h",
    "distance_km",
]
# Columns that hold whole numbers (kept integral after a traffic shift).
INTEGER_FEATURES = {"age", "account_age_days", "transactions_24h"}
CATEGORICAL_FEATURES = ["merchant_category", "channel"]
FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES

MERCHANT_CATEGORIES = {
    # name: (probability, median amount, fraud log-odds effect)
    "grocery": (0.34, 35.0, -0.6),
    "restaurant": (0.18, 28.0, -0.4),
    "fuel": (0.14, 45.0, -0.2),
    "other": (0.12, 40.0, 0.0),
    "electronics": (0.10, 180.0, 0.9),
    "travel": (0.07, 320.0, 0.5),
    "gaming": (0.05, 25.0, 1.1),
}
CHANNELS = {
    # name: (probability, fraud log-odds effect)
    "pos": (0.62, -0.5),
    "online": (0.30, 0.9),
    "atm": (0.08, 0.4),
}

CONFIDENCE_EDGES = [round(0.1 * i, 1) for i in range(1, 10)]
PROFILE_VERSION = 1


def generate_transactions(n: int, rng: np.random.Generator | int | None = None) -> pd.DataFrame:
    """Draw `n` synthetic card transactions (features only, no label)."""
    rng = np.random.default_rng(rng)

    cat_names = list(MERCHANT_CATEGORIES)
    cat_p = np.array([MERCHANT_CATEGORIES[c][0] for c in cat_names])
    merchant = rng.choice(cat_names, size=n, p=cat_p / cat_p.sum())

    ch_names = list(CHANNELS)
    ch_p = np.array([CHANNELS[c][0] for c in ch_names])
    channel = rng.choice(ch_names, size=n, p=ch_p / ch_p.sum())
    # Fuel is paid at the pump, cash comes from ATMs: keep the mix plausible.
    channel = np.where((merchant == "fuel") & (channel == "online"), "pos", channel)

    median = np.array([MERCHANT_CATEGORIES[c][1] for c in merchant])
    amount = rng.lognormal(mean=np.log(median), sigma=0.9)
    amount = np.where(channel == "atm", np.round(amount / 20.0 + 1) * 20.0, amount)
    amount = np.round(np.clip(amount, 0.5, 25_000.0), 2)

    age = np.clip(np.round(rng.normal(44.0, 15.0, size=n)), 18, 90).astype(np.int64)

    max_days = (age - 17) * 365
    account_age_days = np.minimum(rng.gamma(shape=1.3, scale=700.0, size=n), max_days)
    account_age_days = np.round(account_age_days).astype(np.int64)

    transactions_24h = rng.poisson(lam=2.2, size=n).astype(np.int64)

    distance_km = np.round(rng.exponential(scale=12.0, size=n), 2)

    return pd.DataFrame(
        {
            "amount": amount,
            "age": age,
            "account_age_days": account_age_days,
            "transactions_24h": transactions_24h,
            "distance_km": distance_km,
            "merchant_category": merchant,
            "channel": channel,
        }
    )


def fraud_logit(df: pd.DataFrame) -> np.ndarray:
    """The noiseless log-odds of fraud behind the labels."""
    cat_effect = df["merchant_category"].map({k: v[2] for k, v in MERCHANT_CATEGORIES.items()})
    ch_effect = df["channel"].map({k: v[1] for k, v in CHANNELS.items()})
    return (
        -3.2
        + 1.1 * (np.log(df["amount"].to_numpy()) - np.log(60.0))
        + cat_effect.to_numpy(dtype=float)
        + ch_effect.to_numpy(dtype=float)
        + 0.55 * (df["transactions_24h"].to_numpy() - 2.2)
        + 1.3 * np.log1p(df["distance_km"].to_numpy() / 10.0)
        - 0.9 * np.log1p(df["account_age_days"].to_numpy() / 365.0)
        + 0.03 * np.maximum(df["age"].to_numpy() - 65, 0)
        + 0.04 * np.maximum(25 - df["age"].to_numpy(), 0)
    )


def label_transactions(df: pd.DataFrame, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Noisy logistic labels: 1 = fraud."""
    rng = np.random.default_rng(rng)
    logit = fraud_logit(df) + rng.normal(0.0, 0.4, size=len(df))
    p = 1.0 / (1.0 + np.exp(-logit))
    return (rng.random(len(df)) < p).astype(np.int64)


# --------------------------------------------------------------------------- profile


def numeric_profile(name: str, values: np.ndarray, edges: list[float] | None = None) -> dict:
    values = np.asarray(values, dtype=float)
    if edges is None:
        qs = np.quantile(values, np.linspace(0.1, 0.9, 9))
        # Rounded so the JSON stays readable; unique() sorts and drops ties,
        # leaving strictly increasing edges (fewer than 9 for discrete columns).
        edges_arr = np.unique(np.round(qs, 6))
    else:
        edges_arr = np.asarray(edges, dtype=float)
    idx = np.searchsorted(edges_arr, values, side="left")
    counts = np.bincount(idx, minlength=len(edges_arr) + 1)
    return {
        "name": name,
        "kind": "numeric",
        "edges": [float(e) for e in edges_arr],
        "counts": [int(c) for c in counts],
        "count": int(len(values)),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
    }


def categorical_profile(name: str, values, vocabulary=()) -> dict:
    values = pd.Series(values).astype(str)
    freq = values.value_counts().to_dict()
    for v in vocabulary:
        freq.setdefault(str(v), 0)
    categories = sorted(freq, key=lambda c: (-freq[c], c))
    return {
        "name": name,
        "kind": "categorical",
        "categories": categories,
        "counts": [int(freq[c]) for c in categories] + [0],
        "count": int(len(values)),
    }


def build_profile(
    df: pd.DataFrame, predictions: np.ndarray, confidence: np.ndarray, classes, model_version: str
) -> dict:
    features = [numeric_profile(c, df[c].to_numpy()) for c in NUMERIC_FEATURES]
    features += [categorical_profile(c, df[c]) for c in CATEGORICAL_FEATURES]
    return {
        "version": PROFILE_VERSION,
        "modelVersion": model_version,
        "features": features,
        "prediction": categorical_profile("prediction", predictions, vocabulary=classes),
        "confidence": numeric_profile("confidence", confidence, edges=CONFIDENCE_EDGES),
    }


# --------------------------------------------------------------------------- training


def build_pipeline(seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_FEATURES),
            ("num", "passthrough", NUMERIC_FEATURES),
        ]
    )
    clf = GradientBoostingClassifier(
        n_estimators=150, max_depth=3, learning_rate=0.1, subsample=0.8, random_state=seed
    )
    return Pipeline([("pre", pre), ("clf", clf)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "artifacts"), help="output directory (default: %(default)s)")
    ap.add_argument("--rows", type=int, default=20_000, help="rows to generate, before the 80/20 split")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--model-version", default="1.0.0")
    ap.add_argument(
        "--termination-log",
        help="also write the Drover retraining report (model version, image, metrics) here, "
        "e.g. /dev/termination-log in a retraining Job (see docs/retraining.md)",
    )
    ap.add_argument("--image", help="the image the retrained model is served from, for the report")
    args = ap.parse_args(argv)
    if args.rows < 100:
        ap.error("--rows must be at least 100")

    import joblib
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(args.seed)
    df = generate_transactions(args.rows, rng)
    y = label_transactions(df, rng)
    X_train, X_test, y_train, y_test = train_test_split(
        df, y, test_size=0.2, random_state=args.seed, stratify=y
    )
    X_train = X_train.reset_index(drop=True)

    model = build_pipeline(args.seed)
    t0 = time.perf_counter()
    model.fit(X_train[FEATURES], y_train)
    fit_s = time.perf_counter() - t0

    proba_test = model.predict_proba(X_test[FEATURES])
    pred_test = model.classes_[proba_test.argmax(axis=1)]
    acc = accuracy_score(y_test, pred_test)
    auc = roc_auc_score(y_test, proba_test[:, 1])

    proba_train = model.predict_proba(X_train[FEATURES])
    pred_train = model.classes_[proba_train.argmax(axis=1)]
    conf_train = proba_train.max(axis=1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.joblib")

    train_csv = X_train[FEATURES].copy()
    train_csv["label"] = y_train
    train_csv["prediction"] = pred_train
    train_csv.to_csv(out / "train.csv", index=False)

    profile = build_profile(X_train, pred_train, conf_train, model.classes_, args.model_version)
    (out / "profile.json").write_text(json.dumps(profile, indent=2) + "\n")

    summary = {
        "rows_train": int(len(X_train)),
        "rows_test": int(len(X_test)),
        "fraud_rate": round(float(y.mean()), 4),
        "fit_seconds": round(fit_s, 2),
        "test_accuracy": round(float(acc), 4),
        "test_auc": round(float(auc), 4),
        "baseline_accuracy": round(float(1 - y_test.mean()), 4),
        "out": os.fspath(out),
    }
    print(json.dumps(summary))
    if args.termination_log:
        # Kubernetes keeps at most 4096 bytes of a termination message: the report stays small.
        report = {
            "model": {"version": args.model_version},
            "metrics": {"accuracy": round(float(acc), 4), "auc": round(float(auc), 4)},
        }
        if args.image:
            report["model"]["image"] = args.image
        Path(args.termination_log).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
