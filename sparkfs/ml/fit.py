"""Fitting the booster: XGBoost with early stopping on the validation split."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import xgboost as xgb

from sparkfs.ml.config import XGBoostConfig
from sparkfs.ml.model import Preprocessor

log = logging.getLogger(__name__)

DEFAULT_XGB_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "max_cat_to_onehot": 8,
    "nthread": 2,
}


def fit_booster(
    preprocessor: Preprocessor, train: pd.DataFrame, validation: pd.DataFrame,
    label: str, config: XGBoostConfig, seed: int,
) -> xgb.Booster:
    """XGBoost with early stopping on the validation split; returns the booster cut at its best
    iteration, so the packaged model is exactly the one that validated best."""
    params = {**DEFAULT_XGB_PARAMS, "seed": seed, **config.params}
    dtrain = xgb.DMatrix(preprocessor.transform(train), label=train[label], enable_categorical=True)
    dvalid = xgb.DMatrix(preprocessor.transform(validation), label=validation[label], enable_categorical=True)
    booster = xgb.train(
        params, dtrain, num_boost_round=config.num_boost_round,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds, verbose_eval=False,
    )
    best = int(booster.best_iteration)
    log.info("xgboost: best iteration %d of %d", best, booster.num_boosted_rounds())
    return booster[: best + 1]
