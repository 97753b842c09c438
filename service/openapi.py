"""The OpenAPI 3.0 document of the API (`GET /v1/openapi.json`), written out by hand.

It is the contract plant integrators code against; tests/test_service_openapi.py runs
schemathesis against the live server to keep it and the real behaviour the same.
"""

from __future__ import annotations

from typing import Any

import rul
from service.requests import ASSET_ID_FORBIDDEN, ASSET_ID_MAX_LENGTH, MAX_CYCLE

_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_STRING = {"type": "string"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None,
            additional: Any = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": additional}
    if required:
        schema["required"] = required
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_ERRORS = {
    400: "Bad input: the message says what, `field` says where.",
    401: "No API key in X-API-Key.",
    403: "The API key is not valid.",
    404: "No such model, asset or forecast.",
    408: "The request body did not arrive within RUL_READ_TIMEOUT seconds.",
    409: "Conflicts with stored state (a different reading for a stored cycle; another model).",
    413: "Too large: body over RUL_MAX_BODY_BYTES, or too many assets/rows per call.",
    414: "The request line (path and query string) is over 4094 bytes.",
    422: "Readings so far outside the model's training range that its outputs are not finite.",
    431: "The request's headers are too large.",
    503: "The database is unavailable for a moment.",
}


def _responses(ok: dict[str, Any] | None, *errors: int, ok_status: int = 200,
               ok_content: dict[str, Any] | None = None, description: str = "OK"
               ) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    content = ok_content if ok_content is not None else _json(ok) if ok is not None else None
    responses[str(ok_status)] = {"description": description, **({"content": content}
                                                                 if content else {})}
    # Any request can be refused for its size or its key, or meet a busy database.
    for status in (*errors, 401, 403, 414, 431, 503):
        responses[str(status)] = {"description": _ERRORS[status], "content": _json(_ref("Error"))}
    return responses


# What the server takes (`service.requests.path_asset_id`), percent-encoded in the path; a '/'
# (even as %2F) splits the path, so no route matches it.
_ASSET_ID = {"name": "asset_id", "in": "path", "required": True,
             "description": f"1-{ASSET_ID_MAX_LENGTH} characters without control characters, "
                            "invisible spaces or format characters (the pattern lists them), "
                            "'/' or U+FFFD; percent-encoded.",
             "schema": {"type": "string", "minLength": 1, "maxLength": ASSET_ID_MAX_LENGTH,
                        "pattern": f"^[^/{ASSET_ID_FORBIDDEN}\\ufffd]+$"}}


_CYCLE = {"type": "integer", "minimum": 0, "maximum": MAX_CYCLE}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _schemas() -> dict[str, Any]:
    quantiles = {"type": "object", "additionalProperties": _NUMBER,
                 "description": "RUL at each quantile level, keyed by the level ('0.1')."}
    prediction = {
        "rul": _NUMBER, "rul_quantiles": quantiles,
        "failure_probability": {"type": "number", "minimum": 0, "maximum": 1},
        "horizon": _NUMBER, "cycles_padded": {"type": "integer", "minimum": 0},
    }
    reading = {"type": "object", "properties": {"cycle": _CYCLE},
               "additionalProperties": _NUMBER,
               "description": "One cycle's readings keyed by the model card's feature names "
                              "(plus 'cycle', required where the card lists it as a feature: "
                              "the asset's age); unknown names are refused."}
    streamed = {"type": "object", "required": ["cycle"],
                "properties": {"cycle": _CYCLE},
                "additionalProperties": _NUMBER}
    forecast = _object({**prediction, "cycle": _INTEGER, "model": _STRING,
                        "model_version": _STRING, "created_at": _NUMBER},
                       ["cycle", "rul", "rul_quantiles", "failure_probability", "model"])
    asset = _object({
        "asset_id": _STRING, "model": _STRING, "alert_threshold": _nullable(_NUMBER),
        "alerting": {"type": "boolean"}, "last_cycle": _nullable(_INTEGER),
        "n_readings": _INTEGER, "created_at": _NUMBER, "updated_at": _NUMBER,
        "effective_alert_threshold": _NUMBER, "forecast": _nullable(_ref("Forecast")),
    }, ["asset_id", "model", "alerting", "n_readings"])
    alert = _object({
        "type": _STRING, "alert_id": _STRING, "asset_id": _STRING, "cycle": _INTEGER,
        "failure_probability": _NUMBER, "threshold": _NUMBER, "horizon": _NUMBER,
        "rul": _NUMBER, "rul_quantiles": quantiles, "model": _STRING, "model_version": _STRING,
        "created_at": _NUMBER, "pending_deliveries": _INTEGER,
    }, ["alert_id", "asset_id", "cycle", "failure_probability", "threshold"])
    model = _object({
        "name": _STRING, "version": _STRING, "default": {"type": "boolean"},
        "features": {"type": "array", "items": _STRING}, "window": _INTEGER,
        "horizon": _NUMBER, "rul_cap": _NUMBER, "quantiles": {"type": "array", "items": _NUMBER},
        "backbone": _nullable(_STRING), "created": _nullable(_STRING),
    }, ["name", "version", "features", "window", "horizon", "quantiles"])
    return {
        "Error": _object({"error": _object({
            "status": _INTEGER, "message": _STRING, "field": _nullable(_STRING),
        }, ["status", "message", "field"])}, ["error"]),
        "Health": _object({"status": _STRING, "version": _STRING}, ["status"]),
        "Ready": _object({"status": {"type": "string", "enum": ["ready", "not ready"]},
                          "models": {"type": "array", "items": _STRING},
                          "default_model": _STRING, "database": _STRING, "version": _STRING},
                         ["status", "models", "database"]),
        "ModelSummary": model,
        "Models": _object({"default": _STRING, "models": {"type": "array",
                                                          "items": _ref("ModelSummary")}},
                          ["default", "models"]),
        "ModelCard": _object({"name": _STRING, "version": _STRING,
                              "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                         "description": "Of the model file (checked against "
                                                        "its sidecar at load)."},
                              "card": {"type": "object", "additionalProperties": True}},
                             ["name", "version", "sha256", "card"]),
        "Reading": reading,
        "StreamedReading": streamed,
        "PredictRequest": _object({
            "readings": {"type": "array", "minItems": 1, "items": _ref("Reading"),
                         "description": "Oldest first; fewer than the window are padded."},
            "window": {"type": "array", "minItems": 1,
                       "items": {"type": "array", "items": _NUMBER},
                       "description": "Exactly `window` rows in the card's feature order. "
                                      "Where the card lists 'cycle', its column holds whole "
                                      "numbers >= 0 that rise from row to row (a padded "
                                      "window repeats its first row)."},
            "model": _STRING,
        }),
        "Prediction": _object({**prediction, "model": _STRING, "model_version": _STRING},
                              ["rul", "rul_quantiles", "failure_probability", "horizon",
                               "cycles_padded", "model", "model_version"]),
        "BatchRequest": _object({
            "assets": {"type": "array", "minItems": 1, "items": _object({
                "asset_id": {"oneOf": [_STRING, _INTEGER]},
                "readings": {"type": "array", "minItems": 1, "items": _ref("Reading")},
                "window": {"type": "array", "items": {"type": "array", "items": _NUMBER}},
            }, ["asset_id"])},
            "model": _STRING,
        }, ["assets"]),
        "BatchPrediction": _object({
            "model": _STRING, "model_version": _STRING,
            "predictions": {"type": "array", "items": _object(
                {**prediction, "asset_id": _STRING, "index": _INTEGER},
                ["rul", "rul_quantiles", "failure_probability", "horizon", "cycles_padded"])},
        }, ["model", "model_version", "predictions"]),
        "ReadingsRequest": _object({
            "readings": {"type": "array", "minItems": 1, "items": _ref("StreamedReading")},
            "model": _STRING,
        }, ["readings"]),
        "Forecast": forecast,
        "IngestAnswer": _object({"asset_id": _STRING, "stored": _INTEGER,
                                 "duplicates": _INTEGER, "forecast": _nullable(_ref("Forecast")),
                                 "alert": _nullable(_ref("Alert"))},
                                ["asset_id", "stored", "duplicates", "forecast", "alert"]),
        "AssetSettings": _object({"model": _STRING,
                                  "alert_threshold": _nullable({"type": "number",
                                                                "exclusiveMinimum": True,
                                                                "minimum": 0, "maximum": 1})}),
        "Asset": asset,
        "AssetList": _object({"assets": {"type": "array", "items": _ref("Asset")},
                              "count": _INTEGER, "next_after": _nullable(_STRING)},
                             ["assets", "count", "next_after"]),
        "History": _object({
            "asset_id": _STRING,
            "readings": {"type": "array", "items": {"type": "object",
                                                    "additionalProperties": True}},
            "forecasts": {"type": "array", "items": _ref("Forecast")},
            "next_after_cycle": _nullable(_INTEGER),
        }, ["asset_id", "readings", "forecasts", "next_after_cycle"]),
        # Forecast's properties plus asset_id, written out: an allOf of Forecast (which forbids
        # additional properties) and {asset_id} would refuse every answer.
        "LatestForecast": _object({**forecast["properties"], "asset_id": _STRING},
                                  ["asset_id", *forecast["required"]]),
        "Alert": alert,
        "Alerts": _object({"alerts": {"type": "array", "items": _ref("Alert")},
                           "outbox": _object({"pending": _INTEGER, "delivered": _INTEGER,
                                              "held": _INTEGER})},
                          ["alerts", "outbox"]),
        "Report": _object({
            "generated_at": _NUMBER, "lead_time": _INTEGER, "threshold": _NUMBER,
            "n_assets": _INTEGER, "n_at_risk": _INTEGER,
            "assets": {"type": "array", "items": {"type": "object",
                                                  "additionalProperties": True}},
        }, ["lead_time", "threshold", "n_assets", "n_at_risk", "assets"]),
    }


def _head_of(get: dict[str, Any]) -> dict[str, Any]:
    """The HEAD operation of a read-only route: its GET's status and headers, no body."""
    head = {**get, "summary": f"{get['summary']} (status only)",
            "operationId": f"{get['operationId']}Head",
            "responses": {status: {k: v for k, v in answer.items() if k != "content"}
                          for status, answer in get["responses"].items()}}
    return head


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    limit = _query("limit", {"type": "integer", "minimum": 1}, "Page size (at most "
                   "RUL_HISTORY_LIMIT).")
    paths = {
        "/v1/health": {"get": {"summary": "Liveness", "security": [], "operationId": "health",
                               "responses": {"200": {"description": "Up",
                                                     "content": _json(_ref("Health"))}}}},
        "/v1/ready": {"get": {"summary": "Readiness: models loaded, database writable",
                              "operationId": "ready",
                              "responses": {**_responses(_ref("Ready")),
                                            "503": {"description": "Not ready",
                                                    "content": _json(_ref("Ready"))}}}},
        "/v1/models": {"get": {"summary": "Served models", "operationId": "models",
                               "responses": _responses(_ref("Models"))}},
        "/v1/models/{name}": {"get": {
            "summary": "A model's card", "operationId": "modelCard",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": _STRING}],
            "responses": _responses(_ref("ModelCard"), 404)}},
        "/v1/predict": {"post": {
            "summary": "Predict one asset from a window of readings", "operationId": "predict",
            "requestBody": {"required": True, "content": _json(_ref("PredictRequest"))},
            "responses": _responses(_ref("Prediction"), 400, 404, 408, 413, 422)}},
        "/v1/predict/batch": {"post": {
            "summary": "Predict many assets (JSON), or many windows (.npy, float32 "
                       "[batch, window, n_features] in card order; a 'cycle' column as in "
                       "PredictRequest.window)",
            "operationId": "predictBatch",
            "parameters": [_query("model", _STRING, "Model for a .npy body.")],
            "requestBody": {"required": True, "content": {
                **_json(_ref("BatchRequest")),
                "application/x-npy": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": _responses(_ref("BatchPrediction"), 400, 404, 408, 413, 422)}},
        "/v1/assets": {"get": {
            "summary": "Tracked assets, by id", "operationId": "assets",
            "parameters": [limit, _query("after", _STRING, "Continue after this asset id.")],
            "responses": _responses(_ref("AssetList"), 400)}},
        "/v1/assets/{asset_id}": {
            "get": {"summary": "An asset: settings and newest forecast", "operationId": "asset",
                    "parameters": [_ASSET_ID], "responses": _responses(_ref("Asset"), 400, 404)},
            "put": {"summary": "Configure an asset (model, alert_threshold)",
                    "operationId": "configureAsset", "parameters": [_ASSET_ID],
                    "requestBody": {"required": True, "content": _json(_ref("AssetSettings"))},
                    "responses": _responses(_ref("Asset"), 400, 404, 408, 409, 413)}},
        "/v1/assets/{asset_id}/readings": {"post": {
            "summary": "Stream readings (idempotent on asset_id, cycle); answers the forecast",
            "operationId": "postReadings", "parameters": [_ASSET_ID],
            "requestBody": {"required": True, "content": _json(_ref("ReadingsRequest"))},
            "responses": _responses(_ref("IngestAnswer"), 400, 404, 408, 409, 413, 422)}},
        "/v1/assets/{asset_id}/history": {"get": {
            "summary": "Readings and forecasts, oldest first, paginated",
            "operationId": "history",
            "parameters": [_ASSET_ID,
                           _query("from_cycle", _CYCLE, "First."),
                           _query("to_cycle", _CYCLE, "Last."),
                           limit,
                           _query("after_cycle", _CYCLE,
                                  "Continue after this cycle (next_after_cycle).")],
            "responses": _responses(_ref("History"), 400, 404)}},
        "/v1/assets/{asset_id}/forecast": {"get": {
            "summary": "The newest forecast", "operationId": "latestForecast",
            "parameters": [_ASSET_ID, _query("model", _STRING, "Another served model.")],
            "responses": _responses(_ref("LatestForecast"), 400, 404)}},
        "/v1/alerts": {"get": {
            "summary": "Raised alerts, newest first, and the outbox", "operationId": "alerts",
            "parameters": [_query("asset_id", _STRING, "Only this asset."), limit],
            "responses": _responses(_ref("Alerts"), 400)}},
        "/v1/report": {"get": {
            "summary": "Fleet report: assets ranked by urgency", "operationId": "report",
            "parameters": [
                _query("format", {"type": "string", "enum": ["json", "csv", "html"]}, "Format."),
                _query("lead_time", {"type": "integer", "minimum": 0, "maximum": 10000},
                       "Cycles of lead time for the recommended maintenance."),
                _query("top_n", {"type": "integer", "minimum": 1, "maximum": 10000},
                       "Assets in the HTML page's table and chart.")],
            "responses": _responses(None, 400, ok_content={
                **_json(_ref("Report")), "text/csv": {"schema": _STRING},
                "text/html": {"schema": _STRING}})}},
        "/v1/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                     "responses": _responses({"type": "object"})}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format)",
                             "operationId": "metrics",
                             "responses": _responses(None, ok_content={
                                 "text/plain": {"schema": _STRING}})}},
    }
    for item in paths.values():
        if "get" in item:
            item["head"] = _head_of(item["get"])
    return {
        "openapi": "3.0.3",
        "info": {"title": "rul service", "version": rul.__version__,
                 "description": "Remaining-useful-life forecasts for plant systems. Every "
                                "error is {\"error\": {status, message, field}}."},
        "paths": paths,
        "components": {"schemas": _schemas(), "securitySchemes": {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        "security": [{"ApiKey": []}],
    }
