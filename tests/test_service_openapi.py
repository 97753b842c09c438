"""The OpenAPI document (`service/openapi.py`) against the real server, checked by schemathesis.

A real `rul serve` (one worker) is seeded with a few assets, then every operation of the
document it serves at GET /v1/openapi.json is exercised three ways: schemathesis' valid data,
its invalid data, and requests built here from the served model card (the document cannot name
a model's features, so generated bodies alone seldom get past a 400 on the prediction and
readings endpoints, and random asset ids only ever meet a 404). Every answer must not be a 5xx
and must have a documented status code, a documented content type and a body that conforms to
the documented schema (error answers too, whose schema is {"error": {status, message,
field}}); the document's security and methods must hold as well (no key: refused; another
method: 405). Generation is derandomized, so every run sends the same requests.

The operations are driven with `APIOperation.as_strategy` and `hypothesis.given` rather than
`schemathesis.pytest.from_fixture`: the document comes from a server a fixture starts, and with
pytest 9.2 the lazy loader of schemathesis 4.32 fails (`Function` has no `_nodeid` any more).
The document is fetched here and given to `from_dict`: `from_url` would leave out the operation
that serves the document itself, GET /v1/openapi.json.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from rul.simulate import SimulationConfig, simulate_fleet
from service import openapi
from tests.service_helpers import API_KEY, Answer, ServiceProcess

MAX_EXAMPLES = 30
"""Hypothesis examples per operation and kind of data."""

KEY_HEADER = {"X-API-Key": API_KEY}
NPY = "application/x-npy"
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    # The document's security holds: the call again without the key is refused.
    schemathesis.checks.ignored_auth,
    # The document's methods are all: another method on the path is a 405.
    schemathesis.checks.unsupported_method,
]

# A .npy body is bytes on the wire, as application/octet-stream is.
schemathesis.serializer.alias(NPY, "application/octet-stream")


def _document_operations() -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in openapi.document()["paths"].items()
            for method in item]


OPERATIONS = _document_operations()


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class Fleet:
    """What the seeded server holds, for requests that get past validation."""

    model: str
    features: list[str]
    window: int
    tracked: list[str]
    """Assets with readings and forecasts (the first has raised an alert)."""
    configured: str
    """An asset configured with PUT, without readings."""
    rows: list[dict[str, float]]
    """Realistic readings (simulated), keyed by feature name."""

    @property
    def assets(self) -> list[str]:
        return [*self.tracked, self.configured]


def _ok(answer: Answer) -> Any:
    assert answer.status == 200, (answer.status, answer.body[:2000])
    return answer.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = ServiceProcess(db=tmp_path_factory.mktemp("openapi") / "s.db", workers=1).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def fleet(server: ServiceProcess) -> Fleet:
    """Two assets with simulated readings (one alerting) and one configured without readings."""
    models = _ok(server.request("GET", "/v1/models"))
    card = next(m for m in models["models"] if m["name"] == models["default"])
    features = card["features"]
    train = simulate_fleet(SimulationConfig(assets=2, seed=11)).train
    rows: dict[str, list[dict[str, Any]]] = {}
    for asset, frame in train.groupby("asset_id"):
        rows[f"sim-{asset}"] = [{**{f: float(r[f]) for f in features}, "cycle": int(r["cycle"])}
                                for r in frame.to_dict("records")]
    first, second = sorted(rows)
    # A threshold low enough that the run to failure surely alerts: /v1/alerts has an alert.
    _ok(server.request("PUT", f"/v1/assets/{first}", {"alert_threshold": 0.001}))
    answer = _ok(server.request("POST", f"/v1/assets/{first}/readings",
                                {"readings": rows[first]}))
    assert answer["alert"] is not None, answer
    _ok(server.request("POST", f"/v1/assets/{second}/readings",
                       {"readings": rows[second][:card["window"] // 3]}))
    _ok(server.request("PUT", "/v1/assets/configured-only", {"model": models["default"]}))
    samples = [{f: r[f] for f in features} for r in rows[first][::7]]
    return Fleet(models["default"], features, card["window"], [first, second],
                 "configured-only", samples)


@pytest.fixture(scope="module")
def api_schema(server: ServiceProcess, fleet: Fleet) -> Any:
    """The document the server serves, loaded by schemathesis, aimed at the server."""
    answer = server.request("GET", "/v1/openapi.json")
    assert answer.status == 200, answer.body[:2000]
    assert answer.headers["content-type"].startswith("application/json")
    schema = schemathesis.openapi.from_dict(answer.json())
    schema.config.update(base_url=f"http://127.0.0.1:{server.port}", headers=dict(KEY_HEADER))
    return schema


# --------------------------------------------------------------------------- requests built here

_VALUE = st.one_of(st.floats(min_value=-1e4, max_value=1e4),
                   st.floats(allow_nan=False, allow_infinity=False, width=32))


def _one_made(rows: list[Any], at: int, made: Any) -> list[Any]:
    """`rows` with the row at `at` (wrapped) replaced by `made`, when there is one."""
    if made is not None:
        rows = [*rows]
        rows[at % len(rows)] = made
    return rows


def _row_lists(fleet: Fleet) -> list[list[float]]:
    return [[r[f] for f in fleet.features] for r in fleet.rows]


# Realistic rows, one of them at most made of arbitrary float32 values: a window of random
# rows is hundreds of float draws, more than hypothesis fits in one example of a batch.
def _readings(fleet: Fleet) -> st.SearchStrategy[list[dict[str, float]]]:
    made = st.one_of(st.none(), st.fixed_dictionaries({f: _VALUE for f in fleet.features}))
    rows = st.builds(_one_made, st.lists(st.sampled_from(fleet.rows), min_size=1,
                                         max_size=fleet.window + 5),
                     st.integers(0, fleet.window + 4), made)
    if "cycle" not in fleet.features:
        return rows
    # A model that reads the asset's age needs whole, rising cycles to get past validation.
    return rows.map(lambda drawn: [{**r, "cycle": 50 + i} for i, r in enumerate(drawn)])


def _window(fleet: Fleet) -> st.SearchStrategy[list[list[float]]]:
    made = st.one_of(st.none(), st.lists(_VALUE, min_size=len(fleet.features),
                                         max_size=len(fleet.features)))
    window = st.builds(_one_made, st.lists(st.sampled_from(_row_lists(fleet)),
                                           min_size=fleet.window, max_size=fleet.window),
                       st.integers(0, fleet.window - 1), made)
    if "cycle" not in fleet.features:
        return window
    j = fleet.features.index("cycle")
    return window.map(lambda drawn: [[*r[:j], 50.0 + i, *r[j + 1:]] for i, r in enumerate(drawn)])


def _row(fleet: Fleet) -> st.SearchStrategy[dict[str, float]]:
    made = st.fixed_dictionaries({f: _VALUE for f in fleet.features})
    return st.one_of(st.sampled_from(fleet.rows), made)


def _history(fleet: Fleet) -> st.SearchStrategy[dict[str, Any]]:
    """{"readings": [...]} or {"window": [[...]]}, naming the model or not."""
    data = st.one_of(st.fixed_dictionaries({"readings": _readings(fleet)}),
                     st.fixed_dictionaries({"window": _window(fleet)}))
    model = st.one_of(st.just({}), st.just({"model": fleet.model}))
    return st.builds(lambda d, m: {**d, **m}, data, model)


def _optional(**values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with any subset of these keys."""
    return st.fixed_dictionaries({}, optional=values)


def _asset_path(fleet: Fleet, fresh: bool = False) -> st.SearchStrategy[dict[str, str]]:
    ids = st.sampled_from(fleet.assets)
    if fresh:
        ids = st.one_of(ids, st.integers(0, 10**6).map(lambda n: f"fuzz-{n}"))
    return st.fixed_dictionaries({"asset_id": ids})


def _npy_body(fleet: Fleet) -> st.SearchStrategy[bytes]:
    def save(batch: list[list[list[float]]], dtype: str) -> bytes:
        out = io.BytesIO()
        np.save(out, np.array(batch, dtype=dtype))
        return out.getvalue()

    return st.builds(save, st.lists(_window(fleet), min_size=1, max_size=3),
                     st.sampled_from(["float32", "float64"]))


def _batch_body(fleet: Fleet) -> st.SearchStrategy[dict[str, Any]]:
    ids = st.one_of(st.integers(0, 10**6), st.text(min_size=1, max_size=20).filter(str.isprintable))
    item = st.builds(lambda asset_id, data: {"asset_id": asset_id, **data}, ids,
                     st.one_of(st.fixed_dictionaries({"readings": _readings(fleet)}),
                               st.fixed_dictionaries({"window": _window(fleet)})))
    assets = st.lists(item, min_size=1, max_size=4, unique_by=lambda i: str(i["asset_id"]))
    model = st.one_of(st.just({}), st.just({"model": fleet.model}))
    return st.builds(lambda a, m: {"assets": a, **m}, assets, model)


def _streamed(fleet: Fleet) -> st.SearchStrategy[dict[str, Any]]:
    """{"readings": [{"cycle": c, ...}, ...]} with increasing cycles, the model maybe named."""

    def number(start: int, steps: list[int], rows: list[dict[str, float]]) -> list[dict[str, Any]]:
        cycles = np.cumsum([start, *steps]).tolist()
        return [{**r, "cycle": c} for c, r in zip(cycles, rows, strict=False)]

    readings = st.builds(number, st.integers(0, 250), st.lists(st.integers(1, 3), max_size=40),
                         st.lists(_row(fleet), min_size=1, max_size=20))
    model = st.one_of(st.just({}), st.just({"model": fleet.model}))
    return st.builds(lambda r, m: {"readings": r, **m}, readings, model)


Built = Callable[[Any, Fleet], st.SearchStrategy[Any]]
Part = st.SearchStrategy[Any] | Callable[[Fleet], st.SearchStrategy[Any]]


def _case(**parts: Part) -> Built:
    """Cases of an operation from strategies (or functions of the fleet that make them) of its
    path_parameters, query, body, media_type."""

    def build(operation: Any, fleet: Fleet) -> st.SearchStrategy[Any]:
        drawn = {name: strategy(fleet) if callable(strategy) else strategy
                 for name, strategy in parts.items()}
        return st.builds(lambda **kw: operation.Case(headers=dict(KEY_HEADER), **kw), **drawn)

    return build


def _npy_case(operation: Any, fleet: Fleet) -> st.SearchStrategy[Any]:
    return st.builds(lambda body, query: operation.Case(headers=dict(KEY_HEADER), body=body,
                                                        media_type=NPY, query=query),
                     _npy_body(fleet), _optional(model=st.just(fleet.model)))


REALISTIC: dict[str, list[Built]] = {
    "GET /v1/models/{name}": [
        _case(path_parameters=lambda f: st.fixed_dictionaries({"name": st.just(f.model)}))],
    "POST /v1/predict": [_case(body=_history, media_type=st.just("application/json"))],
    "POST /v1/predict/batch": [_case(body=_batch_body, media_type=st.just("application/json")),
                               _npy_case],
    "GET /v1/assets": [_case(query=lambda f: _optional(limit=st.integers(1, 3),
                                                       after=st.sampled_from(f.assets)))],
    "GET /v1/assets/{asset_id}": [_case(path_parameters=_asset_path)],
    "PUT /v1/assets/{asset_id}": [_case(
        path_parameters=lambda f: _asset_path(f, fresh=True),
        body=lambda f: _optional(model=st.just(f.model), alert_threshold=st.one_of(
            st.none(), st.floats(min_value=0, max_value=1, exclude_min=True))),
        media_type=st.just("application/json"))],
    "POST /v1/assets/{asset_id}/readings": [_case(
        path_parameters=lambda f: _asset_path(f, fresh=True), body=_streamed,
        media_type=st.just("application/json"))],
    "GET /v1/assets/{asset_id}/history": [_case(
        path_parameters=_asset_path,
        query=lambda f: _optional(from_cycle=st.integers(0, 150), to_cycle=st.integers(100, 400),
                                  limit=st.integers(1, 30), after_cycle=st.integers(0, 300)))],
    "GET /v1/assets/{asset_id}/forecast": [_case(
        path_parameters=_asset_path, query=lambda f: _optional(model=st.just(f.model)))],
    "GET /v1/alerts": [_case(query=lambda f: _optional(asset_id=st.sampled_from(f.assets),
                                                       limit=st.integers(1, 5)))],
}


# --------------------------------------------------------------------------- the tests


def _run(strategy: st.SearchStrategy[Any]) -> None:
    """Send `MAX_EXAMPLES` cases of `strategy`; the first one a check refuses is raised."""

    @hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None,
                         deadline=None, report_multiple_bugs=False,
                         phases=[Phase.explicit, Phase.generate, Phase.shrink],
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                HealthCheck.data_too_large,
                                                HealthCheck.large_base_example])
    @hypothesis.given(case=strategy)
    def check(case: Any) -> None:
        case.call_and_validate(headers=dict(KEY_HEADER), checks=CHECKS)

    check()


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms_to_document(api_schema: Any, fleet: Fleet, method: str,
                                        path: str) -> None:
    operation = api_schema[path][method]
    kinds: list[tuple[str, st.SearchStrategy[Any]]] = [
        ("schemathesis, valid data", operation.as_strategy(schemathesis.GenerationMode.POSITIVE)),
        ("schemathesis, invalid data",
         operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)),
    ]
    kinds += [("built from the model card", build(operation, fleet))
              for build in REALISTIC.get(f"{method} {path}", [])]
    failures = []
    for kind, strategy in kinds:
        try:
            _run(strategy)
        except Unsatisfiable:
            # Nothing of the operation can be made invalid (no parameters, no body).
            if kind != "schemathesis, invalid data":
                raise
        # Every kind runs; all that fail are reported together. (schemathesis' FailureGroup is
        # a BaseExceptionGroup, not an Exception.)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"--- {method} {path}, {kind}:\n{exc}")
    assert not failures, "\n\n".join(failures)


def test_every_route_is_documented_and_served(server: ServiceProcess) -> None:
    """app.py's routes are the document's operations, and the server answers each one itself
    (not with the 404 of a path no route serves, nor a 405)."""
    from service import app

    routes = {(method.upper(), path) for paths in app.api.http.routes.values()
              for path, methods in paths.items() for method in methods}
    document = _ok(server.request("GET", "/v1/openapi.json"))
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item}
    assert routes - documented == set(), "routes of service/app.py missing from the document"
    assert documented - routes == set(), "operations in the document that app.py lacks"
    assert set(OPERATIONS) == documented
    model = _ok(server.request("GET", "/v1/models"))["default"]
    for method, path in sorted(documented):
        concrete = path.replace("{name}", model).replace("{asset_id}", "no-such-asset")
        answer = server.request(method, concrete, body=b"{}" if method in ("POST", "PUT") else None,
                                headers={"Content-Type": "application/json"})
        seen = (method, concrete, answer.status, answer.body[:500])
        generic = answer.status == 404 and _error_message(answer).startswith("no such endpoint")
        assert not generic, seen
        assert answer.status != 405, seen


def _error_message(answer: Answer) -> str:
    try:
        return str(answer.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return ""
