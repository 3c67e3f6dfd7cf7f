"""The floor for /predict: a bare BentoML service that only runs the champion's XGBoost calls.

    BENCH_MODEL_URI=models:/bip-job-chance@champion MLFLOW_TRACKING_URI=... \
        bentoml serve benchmarks.bare_service:BareModel --port 3001

POST /predict takes any JSON object (bench_serving.py sends the same history bodies as to bip's
/predict) and ignores it: it runs `inplace_predict` and the TreeSHAP contributions on one row built
once at start (the model's synthetic input example), and answers the probability and the summed
contributions. No validation, features, explanation, access control or audit: what is left of a
request is BentoML's own cost and the model's, which bip's /predict is measured against. Like bip's
/predict, the API is `async` (run on the event loop, not in BentoML's thread pool).
"""

from __future__ import annotations

import os
from typing import Any

import bentoml


# The request timeout as bip's (serving.service.REQUEST_TIMEOUT_SECONDS, which says why it is short).
@bentoml.service(name="BareModel", traffic={"timeout": 10}, threads=4, metrics={"enabled": False})
class BareModel:
    def __init__(self) -> None:
        from training.model import input_example, load_model

        self.model = load_model(os.environ["BENCH_MODEL_URI"], os.environ.get("MLFLOW_TRACKING_URI"))
        self.row = self.model.matrix(input_example(self.model))

    @bentoml.api(route="/predict")
    async def predict(self, citizen: dict[str, Any], /) -> dict[str, Any]:
        probability = self.model.probability(self.row)
        contributions = self.model.contributions(self.row)
        return {"probability": float(probability[0]), "contributions": contributions[0].tolist()}
