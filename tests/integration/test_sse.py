"""The SSE relay against real Postgres and Redis: replay after Last-Event-ID, live wake-ups, the
fallback poll for a lost wake-up, keep-alives, and the end of the stream after mission:done."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask, Response, request
from flask.testing import FlaskClient
from psycopg.types.json import Jsonb

from api.http import sse
from api.http.sse import event_stream, parse_last_event_id, stream_run
from config import Settings
from orchestrator.spec import format_timestamp
from tests.support.sse import SseEvent, iter_sse
from workers.messaging import wakeups
from workers.messaging.wakeups import publish_wakeup
from workers.store import events as event_log
from workers.support.errors import Invalid
from workers.wiring import Services

MISSION = "msn_sse_test"
RUN = "run_sse_test_1"
OTHER_RUN = "run_sse_test_2"
URL = f"/test/missions/{MISSION}/runs/{RUN}/events"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Short keep-alives make an idle stream yield often, so a test can stop reading on time.
    return settings.replace(sse_heartbeat_seconds=0.2)


@pytest.fixture
def app(app: Flask) -> Flask:
    def events_view(mission_id: str, run_id: str) -> Response:
        last_event_id = parse_last_event_id(request.headers.get("Last-Event-ID"), request.args.get("lastEventId"))
        return stream_run(mission_id, run_id, last_event_id)

    app.add_url_rule("/test/missions/<mission_id>/runs/<run_id>/events", view_func=events_view)
    return app


@pytest.fixture
def runs(db: psycopg.Connection) -> None:
    """A project with one active mission that has two runs."""
    db.execute("INSERT INTO projects (id, name) VALUES ('prj_sse', 'sse')")
    db.execute(
        "INSERT INTO missions (id, project_id, name, status, document) "
        "VALUES (%(id)s, 'prj_sse', 'streamed', 'active', '{}')",
        {"id": MISSION},
    )
    for number, run_id in enumerate((RUN, OTHER_RUN), start=1):
        db.execute(
            "INSERT INTO runs (id, mission_id, number, status, spec, state) "
            "VALUES (%(id)s, %(mission_id)s, %(number)s, 'active', '{}', '{}')",
            {"id": run_id, "mission_id": MISSION, "number": number},
        )


def append(db: psycopg.Connection, event_type: str, data: dict[str, Any] | None = None, run_id: str = RUN) -> int:
    payload = {"missionId": MISSION, "runId": run_id, **(data or {})}
    row = db.execute(
        "INSERT INTO events (run_id, mission_id, type, data) "
        "VALUES (%(run_id)s, %(mission_id)s, %(type)s, %(data)s) RETURNING id",
        {"run_id": run_id, "mission_id": MISSION, "type": event_type, "data": Jsonb(payload)},
    ).fetchone()
    assert row is not None
    return int(row["id"])


def stored(db: psycopg.Connection, run_id: str = RUN) -> list[SseEvent]:
    """The events as a stream must send them: the stored payload and when it was stored."""
    rows = db.execute(
        "SELECT id, type, data, created_at FROM events WHERE run_id = %s ORDER BY id", (run_id,)
    ).fetchall()
    return [
        SseEvent(row["id"], row["type"], {**row["data"], "timestamp": format_timestamp(row["created_at"])})
        for row in rows
    ]


class OpenStream:
    """A streaming response read frame by frame, as a browser would. A thread pulls the frames so
    that a stream that stops yielding fails the test at its deadline instead of hanging it."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.text = ""
        self.ended = False
        self._frames: queue.Queue[bytes | None] = queue.Queue()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._pull, daemon=True)
        self._reader.start()

    def _pull(self) -> None:
        try:
            for frame in self.response.response:
                self._frames.put(frame)
                if self._stop.is_set():
                    break
        finally:
            self._frames.put(None)
            # Closed here: a generator cannot be closed by another thread while it runs.
            self.response.close()

    def events_until(self, done: Callable[[list[SseEvent]], bool], timeout: float = 5.0) -> list[SseEvent]:
        deadline = time.monotonic() + timeout
        events: list[SseEvent] = []
        while not done(events) and not self.ended:
            try:
                frame = self._frames.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"gave up after {timeout}s; got {events}") from None
            if frame is None:
                self.ended = True
                break
            text = frame.decode()
            self.text += text
            events.extend(iter_sse(text.splitlines(keepends=True)))
        return events

    def rest(self, timeout: float = 5.0) -> list[SseEvent]:
        """Every event until the server ends the stream."""
        return self.events_until(lambda _: False, timeout)

    def close(self) -> None:
        """Stop reading; the stream closes at its next frame (a keep-alive comes every 0.2 s)."""
        self._stop.set()
        self._reader.join(timeout=3)


@pytest.fixture
def open_stream(client: FlaskClient) -> Iterator[Callable[..., OpenStream]]:
    opened: list[OpenStream] = []

    def open_(url: str = URL, headers: dict[str, str] | None = None) -> OpenStream:
        response = client.get(url, headers=headers or {}, buffered=False)
        assert response.status_code == 200, response.get_data(as_text=True)
        stream = OpenStream(response)
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        stream.close()


def later(seconds: float, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` on another thread after ``seconds``, like a worker committing an event."""

    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def count(n: int) -> Callable[[list[SseEvent]], bool]:
    return lambda events: len(events) >= n


def has(event_type: str) -> Callable[[list[SseEvent]], bool]:
    return lambda events: any(e.event == event_type for e in events)


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run of every read of the log from now on (streams' and feeds' alike)."""
    reads: list[str] = []
    fetch = event_log.fetch_events
    monkeypatch.setattr(
        event_log, "fetch_events", lambda conn, run_id, *a: reads.append(run_id) or fetch(conn, run_id, *a)
    )
    return reads


def commit_and_publish(database_url: str, redis_url: str, kinds: list[str], data: dict[str, Any] | None = None) -> None:
    """Commit events of RUN one by one and publish the wake-up of each, as a worker's steps do."""
    with psycopg.connect(database_url, autocommit=True) as conn, redis.Redis.from_url(redis_url) as client:
        conn.row_factory = psycopg.rows.dict_row
        for kind in kinds:
            publish_wakeup(client, MISSION, RUN, append(conn, kind, data))


# --- replay ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("runs")
def test_replay_sends_every_event_of_the_run_in_order_with_its_id_type_and_data(
    db: psycopg.Connection, open_stream: Callable[..., OpenStream]
) -> None:
    append(db, "mission:status", {"status": "active"})
    append(db, "task:status", {"taskId": "task_1", "status": "running", "note": "naïve \u2028 line"})
    append(db, "task:output", {"taskId": "task_1", "chunk": "line one\nline two"})
    append(db, "mission:done", {"status": "completed"})

    stream = open_stream()

    assert stream.response.mimetype == "text/event-stream"
    assert stream.response.headers["Cache-Control"] == "no-cache"
    assert stream.response.headers["X-Accel-Buffering"] == "no"
    assert stream.rest() == stored(db)
    assert stream.text.startswith("retry: 2000\n\n")


@pytest.mark.usefixtures("runs")
def test_last_event_id_replays_exactly_the_events_after_it(
    db: psycopg.Connection, open_stream: Callable[..., OpenStream]
) -> None:
    ids = [append(db, "task:status", {"taskId": f"task_{n}"}) for n in range(6)]
    append(db, "mission:done")

    stream = open_stream(headers={"Last-Event-ID": str(ids[2])})

    assert stream.rest() == stored(db)[3:]


@pytest.mark.usefixtures("runs")
def test_the_last_event_id_query_parameter_works_for_clients_that_cannot_send_headers(
    db: psycopg.Connection, open_stream: Callable[..., OpenStream]
) -> None:
    first = append(db, "task:status")
    append(db, "mission:done")

    stream = open_stream(f"{URL}?lastEventId={first}")

    assert [e.event for e in stream.rest()] == ["mission:done"]


@pytest.mark.usefixtures("runs")
def test_a_replay_longer_than_one_page_is_complete(
    db: psycopg.Connection, open_stream: Callable[..., OpenStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "PAGE_SIZE", 3)
    monkeypatch.setattr(sse, "FALLBACK_POLL_SECONDS", 30.0)  # every page comes from the replay itself
    for n in range(7):
        append(db, "task:output", {"chunk": str(n)})
    append(db, "mission:done")

    assert open_stream().rest() == stored(db)


@pytest.mark.usefixtures("runs")
def test_a_client_that_already_saw_mission_done_is_told_to_stop_reconnecting(
    db: psycopg.Connection, client: FlaskClient
) -> None:
    append(db, "task:status")
    done = append(db, "mission:done")

    response = client.get(URL, headers={"Last-Event-ID": str(done)})

    assert response.status_code == 204
    assert response.get_data() == b""


@pytest.mark.usefixtures("runs")
def test_a_malformed_last_event_id_is_a_bad_request_naming_the_header(client: FlaskClient) -> None:
    response = client.get(URL, headers={"Last-Event-ID": "12abc"})

    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "bad_request"
    assert "Last-Event-ID must be the id of a received event" in body["error"]
    assert list(body["details"]["fields"]) == ["Last-Event-ID"]


# --- live ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("runs")
def test_live_events_arrive_on_their_wakeup_without_waiting_for_the_poll(
    db: psycopg.Connection,
    database_url: str,
    redis_url: str,
    open_stream: Callable[..., OpenStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "FALLBACK_POLL_SECONDS", 30.0)  # only a wake-up can deliver in time
    monkeypatch.setattr(wakeups, "HUB_LOG_POLL_SECONDS", 30.0)  # ... one from Redis, not the hub's read
    append(db, "mission:status", {"status": "active"})
    stream = open_stream()
    assert [e.event for e in stream.events_until(count(1))] == ["mission:status"]

    started = time.monotonic()
    later(0.3, lambda: commit_and_publish(database_url, redis_url, ["task:status", "task:output", "mission:done"]))
    live = stream.rest(timeout=5)

    assert time.monotonic() - started < 5
    assert live == stored(db)[1:]


@pytest.mark.usefixtures("runs")
def test_an_event_whose_wakeup_was_lost_still_arrives_by_the_hubs_read_of_the_log(
    db: psycopg.Connection,
    database_url: str,
    open_stream: Callable[..., OpenStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "SAFETY_POLL_SECONDS", 30.0)  # the stream itself does not read again in time
    stream = open_stream()
    stream.events_until(lambda _: ": keep-alive" in stream.text)  # the replay is over

    def worker_commits_but_redis_drops_the_publish() -> None:
        with psycopg.connect(database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
            append(conn, "task:status", {"status": "completed"})
            append(conn, "mission:done")

    later(0.1, worker_commits_but_redis_drops_the_publish)

    assert stream.rest(timeout=5) == stored(db)


@pytest.mark.usefixtures("runs")
def test_a_stream_reads_the_log_itself_while_the_hub_cannot(
    db: psycopg.Connection,
    database_url: str,
    services: Services,
    open_stream: Callable[..., OpenStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(run_ids: list[str]) -> dict[str, int]:
        raise psycopg.OperationalError("the hub's read fails")

    monkeypatch.setattr(services, "_latest_event_ids", broken)
    stream = open_stream()
    stream.events_until(lambda _: ": keep-alive" in stream.text)
    assert not services.wakeup_hub.covered()
    later(0.1, lambda: [append(db, "task:status", {"status": "completed"}), append(db, "mission:done")])
    assert stream.rest(timeout=5) == stored(db)


@pytest.mark.usefixtures("runs")
def test_idle_streams_do_not_each_poll_the_log(
    db: psycopg.Connection, open_stream: Callable[..., OpenStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = counting_reads(monkeypatch)
    latest = event_log.latest_event_ids
    hub_reads: list[list[str]] = []
    monkeypatch.setattr("workers.wiring.latest_event_ids", lambda conn, ids: hub_reads.append(ids) or latest(conn, ids))
    append(db, "mission:status", {"status": "active"})
    streams = [open_stream(f"/test/missions/{MISSION}/runs/{run}/events") for run in (RUN, OTHER_RUN) * 5]
    for stream in streams:
        stream.events_until(lambda _, s=stream: ": keep-alive" in s.text)  # each replayed once
    replays, polls = len(reads), len(hub_reads)
    time.sleep(2.5)
    assert len(reads) == replays  # no stream read the log again: nothing new
    assert 1 <= len(hub_reads) - polls <= 4  # the hub did, about once a second, for all ten
    assert sorted(hub_reads[-1]) == [RUN, OTHER_RUN]


@pytest.mark.usefixtures("runs")
def test_the_followers_of_one_run_share_one_read_of_the_log_per_wakeup(
    db: psycopg.Connection,
    database_url: str,
    redis_url: str,
    open_stream: Callable[..., OpenStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    append(db, "mission:status", {"status": "active"})
    streams = [open_stream() for _ in range(8)]
    for stream in streams:
        assert [e.event for e in stream.events_until(count(1))] == ["mission:status"]
    reads = counting_reads(monkeypatch)

    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:  # one commit
        last = [append(conn, "task:output", {"chunk": str(n)}) for n in range(3)][-1]
    with redis.Redis.from_url(redis_url) as client:
        publish_wakeup(client, MISSION, RUN, last)

    for stream in streams:
        assert stream.events_until(count(3)) == stored(db)[1:]
    assert reads == [RUN]  # one read for the eight of them


@pytest.mark.usefixtures("runs")
def test_a_follower_further_back_than_the_shared_feed_still_gets_every_event_in_order(
    db: psycopg.Connection,
    database_url: str,
    redis_url: str,
    open_stream: Callable[..., OpenStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "PAGE_SIZE", 3)
    monkeypatch.setattr(sse.RunFeed, "KEEP_FRAMES", 4)  # the feed drops all but the last 4 events
    ids = [append(db, "task:output", {"chunk": str(n)}) for n in range(10)]
    live = open_stream()
    assert live.events_until(count(10)) == stored(db)

    commit_and_publish(database_url, redis_url, ["task:output"] * 5, {"chunk": "live"})
    assert live.events_until(count(5)) == stored(db)[10:]
    behind = open_stream(headers={"Last-Event-ID": str(ids[1])})  # far behind the feed's 4
    append(db, "mission:done")
    with redis.Redis.from_url(redis_url) as client:
        publish_wakeup(client, MISSION, RUN, ids[-1] + 100)

    assert behind.rest() == stored(db)[2:]
    assert live.rest() == stored(db)[15:]


@pytest.mark.usefixtures("runs")
def test_followers_that_start_at_different_events_each_get_exactly_the_events_after_theirs(
    db: psycopg.Connection, database_url: str, redis_url: str, open_stream: Callable[..., OpenStream]
) -> None:
    ids = [append(db, "task:status", {"n": n}) for n in range(6)]
    streams = {after: open_stream(headers={"Last-Event-ID": str(ids[after])}) for after in (0, 2, 4, 5)}

    later(0.1, lambda: commit_and_publish(database_url, redis_url, ["task:output", "task:output", "mission:done"]))
    for after, stream in streams.items():
        assert stream.rest() == stored(db)[after + 1 :]


def test_a_run_feed_is_dropped_with_its_last_follower() -> None:
    feeds = sse.RunFeeds()
    first, second = feeds.join(RUN), feeds.join(RUN)
    assert first is second and len(feeds) == 1
    feeds.leave(first)
    assert len(feeds) == 1
    feeds.leave(second)
    assert len(feeds) == 0
    assert feeds.join(RUN) is not first  # a new follower starts a fresh feed


@pytest.mark.usefixtures("runs")
def test_events_of_another_run_of_the_same_mission_never_appear(
    db: psycopg.Connection, database_url: str, redis_url: str, open_stream: Callable[..., OpenStream]
) -> None:
    append(db, "task:status", run_id=OTHER_RUN)
    append(db, "mission:status")
    stream = open_stream()

    def both_runs_progress() -> None:
        with (
            psycopg.connect(database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn,
            redis.Redis.from_url(redis_url) as client,
        ):
            for run_id in (OTHER_RUN, RUN, OTHER_RUN, OTHER_RUN, RUN, OTHER_RUN):
                publish_wakeup(client, MISSION, run_id, append(conn, "task:output", run_id=run_id))
            for run_id in (OTHER_RUN, RUN):
                publish_wakeup(client, MISSION, run_id, append(conn, "mission:done", run_id=run_id))

    later(0.2, both_runs_progress)
    seen = stream.rest(timeout=5)

    assert seen == stored(db, RUN)
    assert all(e.data["runId"] == RUN for e in seen if isinstance(e.data, dict))


@pytest.mark.usefixtures("runs")
def test_the_stream_ends_right_after_mission_done(
    db: psycopg.Connection, open_stream: Callable[..., OpenStream]
) -> None:
    append(db, "task:status")
    append(db, "mission:done")

    stream = open_stream()
    events = stream.rest(timeout=5)

    assert stream.ended
    assert [e.event for e in events] == ["task:status", "mission:done"]


@pytest.mark.usefixtures("runs")
def test_the_stream_of_a_run_continued_after_it_failed_ends_at_its_latest_mission_done(
    db: psycopg.Connection, open_stream: Callable[..., OpenStream]
) -> None:
    append(db, "mission:done", {"status": "failed"})
    append(db, "mission:status", {"status": "active"})  # an operator continued the run
    append(db, "task:status")
    append(db, "mission:done", {"status": "completed"})

    stream = open_stream()
    events = stream.rest(timeout=5)

    assert stream.ended
    assert [e.event for e in events] == ["mission:done", "mission:status", "task:status", "mission:done"]


@pytest.mark.usefixtures("runs")
def test_an_idle_stream_sends_keep_alive_comments(open_stream: Callable[..., OpenStream]) -> None:
    stream = open_stream()
    started = time.monotonic()

    stream.events_until(lambda _: stream.text.count(": keep-alive\n\n") >= 3, timeout=3)

    # Three beats at 0.2 s: about 0.6 s, far less than the 1 s poll would explain.
    assert 0.5 <= time.monotonic() - started < 2.0
    assert stream.text.startswith("retry: 2000\n\n")


# --- connections -----------------------------------------------------------------------------


@pytest.mark.usefixtures("runs")
def test_closing_the_stream_ends_its_subscription(
    db: psycopg.Connection, redis_url: str, open_stream: Callable[..., OpenStream]
) -> None:
    channel = f"mission:{MISSION}"
    observer = redis.Redis.from_url(redis_url)
    stream = open_stream()
    stream.events_until(lambda _: "retry" in stream.text)
    assert observer.pubsub_numsub(channel) == [(channel.encode(), 1)]

    stream.close()

    deadline = time.monotonic() + 2
    while observer.pubsub_numsub(channel) != [(channel.encode(), 0)] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert observer.pubsub_numsub(channel) == [(channel.encode(), 0)]
    observer.close()


@pytest.mark.usefixtures("runs")
def test_the_stream_falls_back_to_polling_when_redis_is_unreachable(
    db: psycopg.Connection, database_url: str, settings: Settings
) -> None:
    from api.http.app import create_app
    from workers.support.embedded import free_port

    unreachable = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    services = Services(unreachable)
    app = create_app(unreachable, services)
    app.add_url_rule("/events", view_func=lambda: stream_run(MISSION, RUN, None))
    try:
        append(db, "mission:status")
        stream = OpenStream(app.test_client().get("/events", buffered=False))
        assert [e.event for e in stream.events_until(count(1))] == ["mission:status"]
        later(0.1, lambda: append(db, "mission:done"))
        assert [e.event for e in stream.rest(timeout=5)] == ["mission:done"]
        stream.close()
    finally:
        services.close()


def test_the_blueprint_publishes_through_the_shared_redis_client(app: Flask, services: Services) -> None:
    with app.app_context():
        assert event_stream.redis is services.redis


# --- Last-Event-ID parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        (None, None, None),
        ("", "  ", None),
        ("17", None, 17),
        (" 17 ", None, 17),
        (None, "5", 5),
        ("17", "5", 17),  # a reconnecting browser's header is newer than the page's URL
        ("", "5", 5),
        ("0", None, 0),
    ],
)
def test_last_event_id_comes_from_the_header_then_the_query(
    header: str | None, query: str | None, expected: int | None
) -> None:
    assert parse_last_event_id(header, query) == expected


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "1_000", "+3", "٣", "9" * 20])
def test_a_last_event_id_that_is_not_an_event_id_is_invalid(bad: str) -> None:
    with pytest.raises(Invalid, match="lastEventId must be the id of a received event"):
        parse_last_event_id(None, bad)
