"""The packaged model: fitted preprocessing + the XGBoost booster, as one MLflow pyfunc.

Training fits :class:`Preprocessor` on the training split only (medians for imputation, the
category vocabulary, optional scaling), trains the booster on its output, and logs both inside
one :class:`PackagedModel`. Batch inference loads that pyfunc and calls its ``predict``, so scoring
runs the identical transform code with the identical fitted parameters; there is no second copy
of the preprocessing to drift out of step.

Example::

    pre = Preprocessor(numeric=["dep_hour", "wind_speed"], categorical=["carrier"]).fit(train_pdf)
    model = PackagedModel(pre, booster, threshold=0.31)
    model.predict(None, test_pdf)   # -> DataFrame[probability: float64, prediction: int32]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, Schema, TensorSpec

from sparkfs.core.errors import SchemaMismatchError

UNKNOWN = "__unknown__"
"""The category bucket for values unseen in training, rare values, and nulls."""

PROBABILITY = "probability"
PREDICTION = "prediction"
MISSING_SUFFIX = "_is_missing"


@dataclass
class Preprocessor:
    """Model-dependent transforms fitted on the training split only.

    - numeric columns: nulls imputed with the training median; a ``<col>_is_missing`` indicator is
      added for every column that had nulls in training (so the model still sees missingness);
      optional standard scaling with the training mean and standard deviation (off for trees);
    - categorical columns: values seen at least ``min_category_count`` times in training keep
      their own category, everything else (unseen, rare, null) goes to the ``__unknown__``
      bucket; the output is a pandas ``category`` with a fixed category list, which XGBoost reads
      natively.
    """

    numeric: list[str]
    categorical: list[str]
    scale: bool = False
    min_category_count: int = 1
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    indicators: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    is_fitted: bool = False

    @property
    def input_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def output_columns(self) -> list[str]:
        return [*self.numeric, *(f"{c}{MISSING_SUFFIX}" for c in self.indicators), *self.categorical]

    def fit(self, train: pd.DataFrame) -> Preprocessor:
        """Learn medians, scaling and the category vocabulary from the training rows only."""
        self._require(train)
        for col in self.numeric:
            values = train[col].astype("float64")
            median = values.median()
            self.medians[col] = 0.0 if pd.isna(median) else float(median)
            if values.isna().any():
                self.indicators.append(col)
            filled = values.fillna(self.medians[col])
            std = float(filled.std(ddof=0)) if len(filled) else 0.0
            self.means[col] = float(filled.mean()) if len(filled) else 0.0
            self.stds[col] = std if std > 0 else 1.0
        for col in self.categorical:
            counts = train[col].dropna().astype(str).value_counts()
            kept = counts[counts >= self.min_category_count].index
            self.categories[col] = sorted(str(v) for v in kept if v != UNKNOWN)
        self.is_fitted = True
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Apply the fitted transforms; columns come out in :attr:`output_columns` order."""
        if not self.is_fitted:
            raise SchemaMismatchError("Preprocessor.transform called before fit")
        self._require(frame)
        out: dict[str, Any] = {}
        for col in self.numeric:
            values = frame[col].astype("float64")
            filled = values.fillna(self.medians[col])
            out[col] = (filled - self.means[col]) / self.stds[col] if self.scale else filled
        for col in self.indicators:
            out[f"{col}{MISSING_SUFFIX}"] = frame[col].isna().astype("float64")
        for col in self.categorical:
            vocabulary = self.categories[col]
            as_text = frame[col].astype("string")
            known = as_text.isin(vocabulary).fillna(False).astype(bool)
            values = as_text.where(known, UNKNOWN).astype(object)
            out[col] = pd.Categorical(values, categories=[*vocabulary, UNKNOWN])
        return pd.DataFrame(out, index=frame.index)[self.output_columns]

    def _require(self, frame: pd.DataFrame) -> None:
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise SchemaMismatchError(
                f"missing feature columns {missing}; the input has {sorted(map(str, frame.columns))}"
            )


class PackagedModel(PythonModel):  # type: ignore[misc]
    """Preprocessor + booster + decision threshold: what training logs and inference loads.

    ``predict`` takes the raw feature columns (as in the signature) and returns
    ``probability`` (float64, P(label = 1)) and ``prediction`` (int32, probability >= threshold).
    """

    def __init__(self, preprocessor: Preprocessor, booster: xgb.Booster, threshold: float) -> None:
        self.preprocessor = preprocessor
        self.booster = booster
        self.threshold = float(threshold)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        matrix = xgb.DMatrix(self.preprocessor.transform(frame), enable_categorical=True)
        return np.asarray(self.booster.predict(matrix), dtype="float64")

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        probability = self.predict_proba(model_input)
        return pd.DataFrame(
            {
                PROBABILITY: probability,
                PREDICTION: (probability >= self.threshold).astype("int32"),
            },
            index=model_input.index,
        )


def model_signature(numeric: Sequence[str], categorical: Sequence[str]) -> ModelSignature:
    """The pyfunc's signature: numeric features as double, categorical as string, all nullable.

    Built explicitly rather than inferred from a sample, so a column that happened to have no
    nulls in training is not marked required (inference would then reject a legitimate null).
    """
    columns: list[ColSpec | TensorSpec] = [
        *(ColSpec("double", c, required=False) for c in numeric),
        *(ColSpec("string", c, required=False) for c in categorical),
    ]
    inputs = Schema(columns)
    outputs = Schema([ColSpec("double", PROBABILITY), ColSpec("integer", PREDICTION)])  # type: ignore[list-item]
    return ModelSignature(inputs=inputs, outputs=outputs)
