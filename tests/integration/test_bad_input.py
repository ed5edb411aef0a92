"""Every kind of bad request is refused with a 4xx in the one error shape, names the offending
field, and leaves the database exactly as it was."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import psycopg
import pytest
from flask.testing import FlaskClient
from hypothesis import strategies as st
from psycopg import sql

from api.http.app import create_app
from config import Settings
from tests.fixtures.examples import DEPLOY_PIPELINE
from workers.wiring import Services

Body = dict[str, Any]


def mission(**changes: Any) -> Body:
    """The documented deploy pipeline under another name, with ``changes`` applied on top."""
    body = copy.deepcopy(DEPLOY_PIPELINE)
    body["name"] = "bad-input-probe"
    body.update(changes)
    return body


def with_task(index: int, **changes: Any) -> Body:
    body = mission()
    body["tasks"][index].update(changes)
    return body


def with_gate(**changes: Any) -> Body:
    body = mission()
    body["qualityGates"][0].update(changes)
    return body


def without(key: str) -> Body:
    body = mission()
    del body[key]
    return body


def two_tasks(a_depends_on: list[str], b_depends_on: list[str]) -> Body:
    tasks = [
        {"title": "A", "description": "a", "assignTo": "backend-dev", "dependsOn": a_depends_on},
        {"title": "B", "description": "b", "assignTo": "backend-dev", "dependsOn": b_depends_on},
    ]
    return mission(tasks=tasks, qualityGates=[])


def raw(token: str, **changes: Any) -> bytes:
    """The probe mission as JSON text with ``token`` (``1e400``, ``NaN``...) written as ``data``."""
    return json.dumps(mission(data="@token@", **changes)).replace('"@token@"', token).encode()


def nested(depth: int) -> Any:
    """Arrays inside arrays, ``depth`` levels of them (``nested(1) == []``)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def many_tasks(count: int) -> bytes:
    """A compact JSON body with ``count`` tasks, each as small as the schema allows."""
    tasks = ",".join(f'{{"title":"t{i}","description":"d","assignTo":"a"}}' for i in range(count))
    return (
        '{"name":"too-many-tasks","team":{"agents":[{"name":"a","model":"scripted/x"}]},"tasks":[' + tasks + "]}"
    ).encode()


@dataclass(frozen=True)
class Case:
    body: Body | list[Any] | bytes | str
    status: int
    field: str | None = None  # the entry expected in details.fields (None: not a field problem)
    message: str | None = None  # text the error message must contain
    method: str = "POST"
    path: str = "/v1/missions"  # {mission} and {task} name the mission created before each case
    content_type: str = "application/json"
    max_body_bytes: int | None = None  # serve the case from an app with this body limit instead


PATCH_MISSION = "/v1/missions/{mission}"
PATCH_TASK = "/v1/missions/{mission}/tasks/{task}"

CASES: dict[str, Case] = {
    "malformed JSON": Case(b'{"name": "x", "tasks": [', 400, message="malformed JSON"),
    "wrong Content-Type": Case(json.dumps(mission()), 415, content_type="text/plain", message="application/json"),
    "body over 1 MiB": Case(mission(prompt="x" * (1 << 20)), 413),
    "body a JSON array": Case([mission()], 400, field="body"),
    "missing name": Case(without("name"), 400, field="name"),
    "missing tasks": Case(without("tasks"), 400, field="tasks"),
    "qualityThreshold a string": Case(mission(qualityThreshold="high"), 400, field="qualityThreshold"),
    "maxRetries a string": Case(with_task(0, maxRetries="2"), 400, field="tasks[0].maxRetries"),
    "sideEffects a string": Case(with_task(1, sideEffects="yes"), 400, field="tasks[1].sideEffects"),
    "tasks not a list": Case(mission(tasks={"title": "Run tests"}), 400, field="tasks"),
    "unknown top-level field": Case(mission(colour="blue"), 400, field="colour"),
    "unknown task field": Case(with_task(1, owner="bob"), 400, field="tasks[1].owner"),
    "empty tasks": Case(mission(tasks=[], qualityGates=[]), 400, field="tasks"),
    "duplicate titles": Case(with_task(1, title="Run tests", dependsOn=[]), 400, field="tasks[1].title"),
    "unknown assignTo": Case(with_task(0, assignTo="nobody"), 400, field="tasks[0].assignTo", message="nobody"),
    "dangling dependsOn": Case(
        with_task(1, dependsOn=["Run tets"]), 400, field="tasks[1].dependsOn[0]", message="Run tets"
    ),
    "self dependsOn": Case(with_task(0, dependsOn=["Run tests"]), 400, field="tasks[0].dependsOn[0]"),
    "dependency cycle": Case(two_tasks(["B"], ["A"]), 400, field="tasks", message='"A" -> "B" -> "A"'),
    "qualityThreshold 0": Case(mission(qualityThreshold=0), 400, field="qualityThreshold"),
    "qualityThreshold 6": Case(mission(qualityThreshold=6), 400, field="qualityThreshold"),
    "gate minScore 7": Case(with_gate(minScore=7), 400, field="qualityGates[0].minScore"),
    "bad ISO deadline": Case(mission(deadline="next tuesday"), 400, field="deadline"),
    "bad cron schedule": Case(mission(schedule="61 * * * *"), 400, field="schedule", message="61 * * * *"),
    "gate naming an unknown task": Case(
        with_gate(afterTasks=["Lint"]), 400, field="qualityGates[0].afterTasks[0]", message="Lint"
    ),
    "checkpoint naming an unknown task": Case(
        mission(checkpoints=[{"afterTasks": ["Smoke test"], "message": "look"}]),
        400,
        field="checkpoints[0].afterTasks[0]",
        message="Smoke test",
    ),
    "name over 200 chars": Case(mission(name="n" * 201), 400, field="name"),
    "task description over 20,000 chars": Case(
        with_task(0, description="d" * 20_001), 400, field="tasks[0].description"
    ),
    "more than 10,000 tasks": Case(
        many_tasks(10_001), 400, field="tasks", message="at most 10000 tasks", max_body_bytes=4 << 20
    ),  # so the task rule answers, never the 1 MiB limit
    "duplicate mission name": Case(copy.deepcopy(DEPLOY_PIPELINE), 409, field="name", message="deploy-pipeline"),
    "PATCH with unknown field": Case(
        {"qualityThreshold": 4.5, "colour": "blue"}, 400, field="colour", method="PATCH", path=PATCH_MISSION
    ),
    "PATCH of a task with a bad type": Case(
        {"priority": "high"}, 400, field="priority", method="PATCH", path=PATCH_TASK
    ),
    "PATCH of a task with an unknown field": Case(
        {"owner": "bob"}, 400, field="owner", method="PATCH", path=PATCH_TASK
    ),
    # -- What no field may hold: Postgres stores neither NUL nor an unpaired surrogate; JSON numbers are
    # finite doubles; nesting is bounded. Each named by its field, wherever it is (free-form data too).
    "NUL in the name": Case(mission(name="a\u0000b"), 400, field="name", message="NUL"),
    "NUL in a task title": Case(with_task(0, title="Run\u0000tests"), 400, field="tasks[0].title"),
    "unpaired surrogate in a description": Case(
        with_task(1, description="ok \ud800"), 400, field="tasks[1].description", message="surrogate"
    ),
    "NUL deep inside data": Case(mission(data={"notes": ["fine", "a\u0000"]}), 400, field="data.notes[1]"),
    "NUL in a key of data": Case(mission(data={"ok": 1, "k\u0000": 1}), 400, field="data", message="key"),
    "unpaired surrogate in a key of data": Case(mission(data={"\udc00": 1}), 400, field="data"),
    "NUL in a JSON schema expectation": Case(
        with_task(0, expectations=[{"type": "json_schema", "schema": {"type": "string", "pattern": "\u0000"}}]),
        400,
        field="tasks[0].expectations[0].schema.pattern",
    ),
    "NaN in data": Case(raw("NaN"), 400, field="data", message="NaN"),
    "Infinity as qualityThreshold": Case(
        json.dumps(mission(qualityThreshold="@")).replace('"@"', "Infinity"), 400, field="qualityThreshold"
    ),
    "-Infinity in data": Case(raw('{"x": [-Infinity]}'), 400, field="data.x[0]"),
    "1e400 in data": Case(raw("1e400"), 400, field="data", message="1e400"),
    "-1e400 as a task timeout": Case(
        json.dumps(with_task(0, timeout="@")).replace('"@"', "-1e400"), 400, field="tasks[0].timeout"
    ),
    "an integer beyond a double in data": Case(raw("1" + "0" * 400), 400, field="data"),
    "an integer of 5,000 digits in data": Case(raw("9" * 5000), 400, field="data"),
    "data nested 64 levels deep (65 with the body)": Case(
        mission(data=nested(64)), 400, field="data" + "[0]" * 63, message="64 levels"
    ),
    "data nested 100,000 levels deep": Case(raw("[" * 100_000 + "]" * 100_000), 400, field="body", message="64"),
    "whitespace-only name": Case(mission(name=" \t "), 400, field="name", message="whitespace"),
    "whitespace-only task title": Case(with_task(0, title="   "), 400, field="tasks[0].title"),
    "PATCH with a whitespace-only name": Case({"name": "  "}, 400, field="name", method="PATCH", path=PATCH_MISSION),
    "PATCH with NUL in the prompt": Case({"prompt": "\u0000"}, 400, field="prompt", method="PATCH", path=PATCH_MISSION),
    "PATCH with NaN in data": Case(
        b'{"data": {"score": NaN}}', 400, field="data.score", method="PATCH", path=PATCH_MISSION
    ),
    "PATCH with tasks": Case(
        {"tasks": []}, 400, field="tasks", message="/v1/missions/{id}/tasks", method="PATCH", path=PATCH_MISSION
    ),
    "PATCH of a task with NaN as timeout": Case(
        b'{"timeout": NaN}', 400, field="timeout", method="PATCH", path=PATCH_TASK
    ),
    "added task with NUL in its description": Case(
        {"title": "Notify", "description": "\u0000", "assignTo": "deploy-agent"},
        400,
        field="description",
        path="/v1/missions/{mission}/tasks",
    ),
    "added task with 1e400 as priority": Case(
        b'{"title": "Notify", "description": "n", "assignTo": "deploy-agent", "priority": 1e400}',
        400,
        field="priority",
        path="/v1/missions/{mission}/tasks",
    ),
    "resume with NUL in a key": Case(
        b'{"retry\\u0000": true}', 400, field="body", path="/v1/missions/{mission}/resume"
    ),
    "added task with a dangling dependsOn": Case(
        {"title": "Notify team", "description": "n", "assignTo": "deploy-agent", "dependsOn": ["Deploy to prod"]},
        400,
        field="tasks[2].dependsOn[0]",
        path="/v1/missions/{mission}/tasks",
    ),
}


def snapshot(db: psycopg.Connection) -> dict[str, Any]:
    """Row counts plus every stored mission and task, to see that nothing at all changed."""
    return {
        "missions": db.execute("SELECT count(*) AS n FROM missions").fetchone()["n"],  # type: ignore[index]
        "tasks": db.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"],  # type: ignore[index]
        "agents": db.execute("SELECT count(*) AS n FROM agents").fetchone()["n"],  # type: ignore[index]
        "mission_rows": db.execute("SELECT * FROM missions ORDER BY id").fetchall(),
        "task_rows": db.execute("SELECT * FROM tasks ORDER BY id").fetchall(),
    }


def encode(case: Case) -> bytes:
    if isinstance(case.body, bytes):
        return case.body
    if isinstance(case.body, str):
        return case.body.encode()
    return json.dumps(case.body).encode()


@pytest.fixture
def client_for(settings: Settings, services: Services, client: FlaskClient) -> Callable[[int | None], FlaskClient]:
    def build(max_body_bytes: int | None) -> FlaskClient:
        if max_body_bytes is None:
            return client
        return create_app(settings.replace(max_body_bytes=max_body_bytes), services).test_client()

    return build


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_bad_request_is_refused_by_name_and_changes_nothing(
    case: Case,
    client: FlaskClient,
    client_for: Callable[[int | None], FlaskClient],
    auth: dict[str, str],
    db: psycopg.Connection,
) -> None:
    existing = client.post("/v1/missions", json=copy.deepcopy(DEPLOY_PIPELINE), headers=auth)
    assert existing.status_code == 201, existing.get_json()
    path = case.path.format(mission=existing.get_json()["id"], task=existing.get_json()["tasks"][0]["id"])
    before = snapshot(db)

    body = encode(case)
    if case.status != 413:
        # The rule under test must be the one that answers, not the body size limit.
        assert len(body) <= (case.max_body_bytes or Settings().max_body_bytes)
    answer = client_for(case.max_body_bytes).open(
        path, method=case.method, data=body, headers={**auth, "Content-Type": case.content_type}
    )

    assert answer.status_code == case.status, answer.get_data(as_text=True)[:2000]
    error = answer.get_json()
    assert answer.mimetype == "application/json"
    assert set(error) == {"error", "code", "details"}
    assert isinstance(error["error"], str) and error["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["details"], dict)
    assert error["code"] == {409: "conflict"}.get(case.status, "bad_request")
    if case.field is not None:
        fields = error["details"]["fields"]
        assert case.field in fields, fields
        assert all(isinstance(m, str) and m for m in fields[case.field])
    if case.message is not None:
        assert case.message in error["error"], error["error"]

    assert snapshot(db) == before


def test_data_nested_as_deep_as_allowed_and_big_finite_numbers_are_stored_as_sent(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    data = {"deep": nested(62), "big": 10**300, "small": -1.5e308, "tiny": 5e-324, "text": "naïve ✓ 𝄞"}
    created = client.post("/v1/missions", json=mission(data=data), headers=auth)  # the body, data, deep: 64 levels
    assert created.status_code == 201, created.get_json()
    stored = client.get(f"/v1/missions/{created.get_json()['id']}", headers=auth).get_json()
    # (jsonb keeps a number as the decimal it was sent as: -1.5e308 comes back as that integer)
    assert stored["data"] == {**data, "small": -15 * 10**307}


QUERY_CASES = {
    "limit beyond 64 bits": ("/v1/missions?limit=99999999999999999999", "limit"),
    "offset beyond 64 bits": ("/v1/missions?offset=99999999999999999999", "offset"),
    "offset past 2**31-1": ("/v1/missions?offset=2147483648", "offset"),
    "offset of 5,000 digits": ("/v1/missions?offset=" + "9" * 5000, "offset"),
    "negative offset": ("/v1/missions?offset=-1", "offset"),
    "limit 0": ("/v1/missions?limit=0", "limit"),
    "limit 1001": ("/v1/missions?limit=1001", "limit"),
    "runs: offset beyond 64 bits": ("/v1/missions/{mission}/runs?offset=99999999999999999999", "offset"),
    "fires: limit beyond 64 bits": ("/v1/missions/{mission}/fires?limit=99999999999999999999", "limit"),
    "fires: offset past 2**31-1": ("/v1/missions/{mission}/fires?offset=2147483648", "offset"),
    "NUL in a mission id": ("/v1/missions/msn_x%00y", "missionId"),
    "NUL in a task id": ("DELETE /v1/missions/{mission}/tasks/t%00", "taskId"),
    "NUL in a run id": ("/v1/missions/{mission}/runs/run%00", "runId"),
    "NUL in ?runId=": ("/v1/missions/{mission}/events?runId=run%00", "runId"),
    "NUL in ?status=": ("/v1/missions?status=%00", "status"),
    "NUL in an unknown parameter's name": ("/v1/missions?a%00b=1", "a\\u0000b"),
}


@pytest.mark.parametrize(("url", "field"), list(QUERY_CASES.values()), ids=list(QUERY_CASES))
def test_a_bad_path_or_query_parameter_is_a_400_naming_it(
    url: str, field: str, client: FlaskClient, auth: dict[str, str]
) -> None:
    existing = client.post("/v1/missions", json=copy.deepcopy(DEPLOY_PIPELINE), headers=auth).get_json()
    method, _, url = url.rpartition(" ")
    answer = client.open(url.format(mission=existing["id"]), method=method or "GET", headers=auth)
    assert answer.status_code == 400, answer.get_data(as_text=True)[:500]
    error = answer.get_json()
    assert set(error) == {"error", "code", "details"} and error["code"] == "bad_request"
    assert field in error["details"]["fields"], error


def test_the_largest_offset_and_limit_are_served(client: FlaskClient, auth: dict[str, str]) -> None:
    answer = client.get("/v1/missions?offset=2147483647&limit=1000", headers=auth)
    assert answer.status_code == 200 and answer.get_json() == []


def test_no_static_files_are_served_from_the_working_directory(
    settings: Settings, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "secret.txt").write_text("not for you")
    monkeypatch.chdir(tmp_path)  # Flask's default static folder is relative to the working directory
    app = create_app(settings, services)
    assert not any(rule.endpoint == "static" for rule in app.url_map.iter_rules())
    answer = app.test_client().get("/static/secret.txt")
    assert answer.status_code == 404
    assert answer.get_json()["code"] == "not_found"


# -- Generated bad bodies --------------------------------------------------------------------------


class Token:
    """JSON text written as is: NaN, Infinity, 1e400, a deep nesting..."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Token({self.text[:30]!r})"


def dump(value: Any) -> str:
    """``value`` as JSON text (ASCII escapes, so lone surrogates survive), ``Token``s as they are."""
    if isinstance(value, Token):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


NASTY_TEXT = ["", " ", "\u0000", "a\u0000b", "\ud800", "x\udfff", "\udbff\udc00", "\u2028", "𝄞", "'; --", "x" * 300]
NASTY_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "1" + "0" * 400, "9" * 5000, "-0"]

texts = st.one_of(st.sampled_from(NASTY_TEXT), st.text(st.characters(exclude_categories=()), max_size=12))
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from(NASTY_NUMBERS).map(Token),
    st.sampled_from([63, 64, 65, 2_000]).map(lambda n: Token("[" * n + "]" * n)),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``document`` a value sits (the keys of objects, the indices of arrays)."""
    out = []
    items: Any = document.items() if isinstance(document, dict) else []
    if isinstance(document, list):
        items = enumerate(document)
    for key, item in items:
        out.append((*prefix, key))
        out.extend(paths(item, (*prefix, key)))
    return out


def put(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


VALID_TASK = {"title": "Notify", "description": "Tell them.", "assignTo": "deploy-agent", "dependsOn": ["Run tests"]}
VALID_PATCH = {"prompt": "Run it again.", "qualityThreshold": 3.5, "data": {"env": "staging"}}
ROUTES = {
    "create a mission": ("POST", "/v1/missions", {**mission(), "data": {"ticket": 1}}),
    "change a mission": ("PATCH", "/v1/missions/{mission}", VALID_PATCH),
    "add a task": ("POST", "/v1/missions/{mission}/tasks", VALID_TASK),
}


@st.composite
def requests_for(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """``base`` (valid) with a few random changes: a value replaced anywhere (the nasty ones
    included), an unknown field, a field dropped; or no object at all."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "valid", "not an object", "malformed"]))
    if kind == "not an object":
        return dump(draw(values)).encode()
    if kind == "malformed":
        return draw(st.sampled_from([b"", b"{", b'{"name": }', b"\xff\xfe", b'{"a": 1}}', b"nul\x00"]))
    document = copy.deepcopy(base)
    if kind == "mutated":
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            action = draw(st.sampled_from(["replace", "replace", "unknown field", "drop"]))
            places = paths(document)
            if action == "replace" and places:
                put(document, draw(st.sampled_from(places)), draw(values))
            elif action == "unknown field":
                document[draw(texts)] = draw(values)
            elif action == "drop" and document:
                del document[draw(st.sampled_from(sorted(document, key=str)))]
    return dump(document).encode()


def every_table(db: psycopg.Connection) -> dict[str, list[str]]:
    """Every row of every table, as JSON text, to see that nothing at all changed."""
    tables = [
        row["tablename"]
        for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
    ]
    return {
        table: [
            row["r"]
            for row in db.execute(
                sql.SQL("SELECT to_jsonb(t)::text AS r FROM {} AS t ORDER BY 1").format(sql.Identifier(table))
            ).fetchall()
        ]
        for table in tables
    }


@pytest.mark.parametrize("route", list(ROUTES), ids=list(ROUTES))
def test_generated_bad_bodies_get_a_4xx_in_the_error_shape_and_change_nothing(
    route: str, client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    method, path, base = ROUTES[route]
    existing = client.post("/v1/missions", json=copy.deepcopy(DEPLOY_PIPELINE), headers=auth).get_json()
    url = path.format(mission=existing["id"])
    seen: dict[int, int] = {}
    counter = iter(range(1_000_000))

    @hypothesis.settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture, hypothesis.HealthCheck.too_slow],
    )
    @hypothesis.given(body=requests_for(base))
    def check(body: bytes) -> None:
        # A unique name and title, so that a valid body is accepted rather than a conflict.
        n = next(counter)
        body = body.replace(b'"bad-input-probe"', b'"probe-%d"' % n).replace(b'"Notify"', b'"Notify %d"' % n)
        before = every_table(db)
        answer = client.open(url, method=method, data=body, headers={**auth, "Content-Type": "application/json"})
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (body[:300], answer.get_data(as_text=True)[:500])
        if answer.status_code >= 400:
            error = answer.get_json()
            assert answer.mimetype == "application/json"
            assert set(error) == {"error", "code", "details"}, error
            assert isinstance(error["error"], str) and error["error"]
            assert error["code"] in {"bad_request", "conflict", "not_found"}, error
            assert isinstance(error["details"], dict)
            assert every_table(db) == before, body[:300]

    check()
    assert any(400 <= status < 500 for status in seen), seen
