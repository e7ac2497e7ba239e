"""Champion / challenger: a newly trained model takes the alias only if it beats the current
champion on the same test holdout by the gate's margin.

The champion (the version behind the alias) scores the challenger's test split through its own
pyfunc; the difference of the gate's metric (challenger - champion) gets a paired bootstrap
interval (:func:`~sparkfs.ml.evaluation.paired_difference`). The challenger passes when the
difference is at least ``gate.min_margin`` and the interval's lower end is above zero (the gain
is not resampling noise). No champion yet: nothing to beat. A champion that cannot score the
holdout (its inputs are not all in it, e.g. the feature list changed) is not compared, and the
check says so.

Example::

    check = champion_check(model, frames.test, config, "flight_delay")
    check.passed, check.text     # False, "champion v2: roc_auc 0.7312 vs challenger 0.7298 ..."
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.models import get_model_info

from sparkfs.ml.aliases import current_version
from sparkfs.ml.config import TrainingConfig
from sparkfs.ml.evaluation import GateResult, paired_difference
from sparkfs.ml.model import PROBABILITY, PackagedModel


@dataclass(frozen=True)
class ChampionCheck:
    champion_version: str | None
    passed: bool
    text: str


def champion_inputs(name: str, alias: str) -> list[str]:
    """The input columns of the model behind ``name@alias`` (its signature); none without one.
    Training collects them with its splits, so the champion can score the same test rows."""
    version = current_version(name, alias)
    if version is None:
        return []
    signature = get_model_info(f"models:/{name}/{version}").signature
    return [c.name for c in signature.inputs.inputs] if signature is not None and signature.inputs else []


def champion_check(model: PackagedModel, test: pd.DataFrame, config: TrainingConfig, name: str) -> ChampionCheck:
    """Compare the challenger ``model`` with ``name@alias`` on the test rows (see the module doc)."""
    version = current_version(name, config.alias)
    if version is None:
        return ChampionCheck(None, True, f"champion: no {name}@{config.alias} yet, nothing to beat")
    champion = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    schema = champion.metadata.get_input_schema()
    inputs = [c.name for c in schema.inputs] if schema is not None else []
    missing = [c for c in inputs if c not in test.columns]
    if missing:
        # The feature list changed and the training set no longer holds what the champion reads:
        # the baseline gate alone decides, and the check says so.
        return ChampionCheck(version, True, f"champion v{version}: not compared, its inputs {missing} "
                                            "are not in this training set")
    gate, ev = config.gate, config.evaluation
    champion_model = champion.unwrap_python_model()
    champion_p = champion.predict(test[inputs])[PROBABILITY].to_numpy()
    challenger_p = model.predict(None, test[config.feature_columns])[PROBABILITY].to_numpy()
    d = paired_difference(test[config.label].to_numpy(), challenger_p, champion_p,
                          threshold_a=model.threshold, threshold_b=float(getattr(champion_model, "threshold", 0.5)),
                          metric=gate.metric, n_boot=ev.bootstrap, confidence=ev.confidence, seed=ev.seed)
    low, high = d.interval
    passed = d.difference >= gate.min_margin and low > 0
    text = (f"champion v{version}: {gate.metric} challenger {d.a:.4f} vs champion {d.b:.4f} on the same "
            f"{len(test)} test rows, improvement {d.difference:+.4f} [{low:+.4f}, {high:+.4f}] "
            f"(required >= {gate.min_margin:+.4f} with the interval above 0)")
    return ChampionCheck(version, passed, text)


def with_champion(gate: GateResult, check: ChampionCheck) -> GateResult:
    """The gate with the champion check added (a failed check is a reason)."""
    reasons = gate.reasons if check.passed else [*gate.reasons, f"does not beat the champion: {check.text}"]
    return GateResult(not reasons, reasons, [*gate.checks, check.text])
