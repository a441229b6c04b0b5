"""FastAPI server for the example card-fraud model (sits behind `drover monitor`).

    MODEL_PATH     path to model.joblib (default: artifacts/model.joblib beside this file)
    MODEL_VERSION  version reported by /health and the X-Model-Version header
                   (default: modelVersion of profile.json beside the model, else "unknown")

    uvicorn app:app --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import json
import math
import os
from contextlib import asynccontextmanager
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

HERE = Path(__file__).resolve().parent
FEATURES = [
    "amount",
    "age",
    "account_age_days",
    "transactions_24h",
    "distance_km",
    "merchant_category",
    "channel",
]


class Transaction(BaseModel):
    # Finite, and bounded well inside float32 (the trees compare in float32):
    # NaN, Infinity or 1e308 would otherwise reach the model and fail with a 500.
    model_config = ConfigDict(allow_inf_nan=False)

    amount: float = Field(ge=0, le=1e9, description="transaction amount")
    age: int = Field(ge=0, le=150, description="card holder's age in years")
    account_age_days: int = Field(ge=0, le=1_000_000)
    transactions_24h: int = Field(ge=0, le=1_000_000, description="transactions on the card in the last 24 h")
    distance_km: float = Field(ge=0, le=1e6, description="distance from the card holder's home")
    merchant_category: str = Field(min_length=1, max_length=64, examples=["grocery"])
    channel: str = Field(min_length=1, max_length=32, examples=["pos"])


class Batch(BaseModel):
    instances: list[Transaction] = Field(min_length=1, max_length=1000)


class Prediction(BaseModel):
    prediction: int
    probability: float
    confidence: float


class BatchPrediction(BaseModel):
    predictions: list[int]
    probabilities: list[list[float]]


class _State:
    model = None
    classes: list[int] = []
    positive: int = 1
    version: str = "unknown"


state = _State()


def _model_path() -> Path:
    return Path(os.environ.get("MODEL_PATH") or HERE / "artifacts" / "model.joblib")


def _model_version(model_path: Path) -> str:
    env = os.environ.get("MODEL_VERSION")
    if env:
        return env
    try:
        return str(json.loads((model_path.parent / "profile.json").read_text())["modelVersion"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def load_model() -> None:
    path = _model_path()
    model = joblib.load(path)
    classes = [int(c) for c in model.classes_]
    state.classes = classes
    state.positive = classes.index(1) if 1 in classes else len(classes) - 1
    state.version = _model_version(path)
    state.model = model  # last: /health turns ready only now


@asynccontextmanager
async def lifespan(_app: FastAPI):
    # Loaded before the server accepts connections; a model that fails to load
    # stops the process (the pod restarts visibly) rather than serving 503s forever.
    load_model()
    yield
    state.model = None


app = FastAPI(title="Drover example: card fraud", version="1.0.0", lifespan=lifespan)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


@app.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError):
    # FastAPI's own 422, unchanged; except that its body echoes the input, and a
    # NaN/Infinity there (Python's json accepts them) would make rendering fail with a 500.
    try:
        return await request_validation_exception_handler(request, exc)
    except ValueError:
        return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def _proba(rows: list[Transaction]) -> np.ndarray:
    frame = pd.DataFrame([r.model_dump() for r in rows], columns=FEATURES)
    return state.model.predict_proba(frame)


def _not_ready() -> JSONResponse:
    return JSONResponse({"status": "loading"}, status_code=503)


@app.get("/health")
def health():
    if state.model is None:
        return _not_ready()
    return {"status": "ok"}


@app.get("/version")
def version():
    return {"modelVersion": state.version}


# Plain `def` handlers: scikit-learn is CPU-bound, so they run in the thread pool
# and keep the event loop free for /health.
@app.post("/predict", response_model=Prediction)
def predict(tx: Transaction, response: Response):
    if state.model is None:
        return _not_ready()
    p = _proba([tx])[0]
    best = int(p.argmax())
    response.headers["X-Model-Version"] = state.version
    return {
        "prediction": state.classes[best],
        "probability": float(p[state.positive]),
        "confidence": float(p[best]),
    }


@app.post("/predict/batch", response_model=BatchPrediction)
def predict_batch(batch: Batch, response: Response):
    if state.model is None:
        return _not_ready()
    p = _proba(batch.instances)
    response.headers["X-Model-Version"] = state.version
    return {
        "predictions": [state.classes[i] for i in p.argmax(axis=1)],
        "probabilities": p.tolist(),
    }
