"""Properties of the execution state machine, checked on random missions driven by a random agent.

A random mission (a DAG of at most 12 tasks, with random expectations, retry policies, side
effects, timeouts, concurrency limits, quality gates and checkpoints) is run by a simulated shell:
every ``StartTask`` is claimed and then finished, failed, streamed or lost; every ``AssessTask``
gets a random score or a judge error; timers fire; a paused run is resumed with a random
``retryFailed``; sometimes a task is added, changed or removed, an operator cancels or retries one
task, a failed run is continued, or the run is aborted. Each property watches every transition of
those runs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine import (
    CONTINUABLE_FAILURES,
    TERMINAL_RUN_STATUSES,
    TERMINAL_TASK_STATUSES,
    UNKNOWN_OUTCOME_ERROR,
    AbortRequested,
    ApprovalTimedOut,
    AssessmentScored,
    AssessTask,
    CancelTask,
    CancelTimer,
    CheckpointTimedOut,
    DeadlineReached,
    Decision,
    DelayElapsed,
    DelayStatus,
    Event,
    GateStatus,
    MissionStatus,
    PublishEvent,
    ReassessRequested,
    ResumeRequested,
    RetryDue,
    ReviewDecision,
    ReviewSubmitted,
    RunState,
    ScheduleTimer,
    StartTask,
    TaskAdded,
    TaskCancelRequested,
    TaskClaimed,
    TaskFailed,
    TaskFinished,
    TaskOutputProduced,
    TaskRemoved,
    TaskRetryRequested,
    TaskStatus,
    TaskTimedOut,
    TaskUpdated,
    WorkerLost,
    _Tally,
    decide,
    max_attempts,
    start_run,
    timer_event,
)
from orchestrator.failures import NON_RETRYABLE, ErrorCode
from orchestrator.spec import MissionSpec, TaskSpec

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
AGENTS = ("dev", "senior", "ops")
MAX_STEPS = 3000
CODES = tuple(ErrorCode)
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ random missions


def _task_doc(draw: st.DrawFn, task_id: str, earlier: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": task_id,
        "title": task_id,
        "description": "",
        "assignTo": draw(st.sampled_from((*AGENTS, "outsider"))),
        "dependsOn": draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else [],
        "maxRetries": draw(st.integers(0, 2)),
        "priority": draw(st.integers(0, 3)),
        "sideEffects": draw(st.booleans()),
    }
    if draw(st.booleans()):
        doc["expectations"] = [{"criterion": "is good"}]
    if draw(st.booleans()):
        doc["timeout"] = 30
    if draw(st.booleans()):
        policy: dict[str, Any] = {"backoff": draw(st.sampled_from([0, 5]))}
        fallback = draw(st.sampled_from([None, "senior", "outsider"]))
        model = draw(st.sampled_from([None, "openai/big"]))
        after = draw(st.sampled_from([None, 0, 1, 2]))
        for key, value in (("fallbackAgent", fallback), ("escalateModel", model), ("escalateAfter", after)):
            if value is not None:
                policy[key] = value
        doc["retryPolicy"] = policy
    return doc


@st.composite
def missions(draw: st.DrawFn) -> MissionSpec:
    count = draw(st.integers(1, 12))
    ids = [f"t{i}" for i in range(count)]
    tasks = [_task_doc(draw, task_id, ids[:i]) for i, task_id in enumerate(ids)]
    ancestors: dict[str, set[str]] = {}
    for task in tasks:
        ancestors[task["id"]] = set(task["dependsOn"]).union(*(ancestors[d] for d in task["dependsOn"]))

    def guarded(kind: str) -> list[dict[str, Any]]:
        out = []
        for i in range(draw(st.integers(0, 2))):
            after = draw(st.lists(st.sampled_from(ids), unique=True, min_size=1, max_size=3))
            downstream = [t for t in ids if set(after) <= ancestors[t]]
            blocks = draw(st.lists(st.sampled_from(downstream), unique=True, max_size=3)) if downstream else []
            if kind == "delay" and not blocks:
                continue  # a delay must block a task
            item: dict[str, Any] = {"name": f"{kind}{i}", "afterTasks": after, "blocksTasks": blocks}
            if kind == "gate":
                min_score = draw(st.sampled_from([None, 3.0, 4.0]))
                if min_score is not None:
                    item["minScore"] = min_score
                item["requireAllPassed"] = draw(st.booleans())
            elif kind == "delay":
                item["duration"] = draw(st.sampled_from([5, "PT1M", "PT10M"]))
            else:
                item["message"] = f"review {i}"
                if draw(st.booleans()):
                    item["timeout"] = 300
                    item["onTimeout"] = draw(st.sampled_from(["approve", "reject", "fail"]))
            out.append(item)
        return out

    team = {
        "name": "crew",
        "agents": [
            {"name": name, "model": f"scripted/{name}", "maxConcurrency": draw(st.sampled_from([None, 1, 2]))}
            for name in AGENTS
        ],
    }
    doc: dict[str, Any] = {
        "name": "random",
        "team": team,
        "qualityThreshold": draw(st.sampled_from([3.0, 4.0])),
        "tasks": tasks,
        "qualityGates": guarded("gate"),
        "checkpoints": guarded("checkpoint"),
        "delays": guarded("delay"),
    }
    if draw(st.booleans()):
        doc["approvalTimeout"] = 600
        doc["onApprovalTimeout"] = draw(st.sampled_from(["approve", "reject", "fail"]))
    concurrency = draw(st.sampled_from([None, 1, 2, 4]))
    if concurrency is not None:
        doc["maxConcurrency"] = concurrency
    if draw(st.integers(0, 3)) == 0:
        doc["deadline"] = "2026-04-01T12:30:00Z"
    return MissionSpec.from_document(doc)


# ----------------------------------------------------------------------- the simulated shell


@dataclass(frozen=True)
class Transition:
    before: RunState
    event: Event
    now: datetime
    decision: Decision


@dataclass
class Shell:
    """Carries out effects the way the real shell would, with a random agent and a random human."""

    rng: random.Random
    state: RunState
    now: datetime = T0
    jobs: list[tuple[str, ...]] = field(default_factory=list)
    outputs: dict[tuple[str, int], str] = field(default_factory=dict)
    timers: dict[tuple[str, str], datetime] = field(default_factory=dict)
    resumes: int = 0
    losses: int = 0
    chunks: int = 0
    changes: int = 0
    operations: int = 0
    continues: int = 0

    def absorb(self, decision: Decision) -> None:
        for effect in decision.effects:
            match effect:
                case StartTask(task_id, attempt, _, _):
                    self.jobs.append(("start", task_id, str(attempt)))
                case AssessTask(task_id, attempt, output):
                    self.outputs[(task_id, attempt)] = output
                    if ("assess", task_id, str(attempt)) not in self.jobs:
                        self.jobs.append(("assess", task_id, str(attempt)))
                case CancelTask(task_id, attempt, _):
                    key = (task_id, str(attempt))
                    self.jobs = [j for j in self.jobs if not (j[0] in ("start", "running") and j[1:] == key)]
                case ScheduleTimer(kind, key, due_at):
                    self.timers[(kind, key)] = due_at
                case CancelTimer(kind, key):
                    self.timers.pop((kind, key), None)
                case PublishEvent():
                    pass

    def pending_work(self) -> int:
        return len(self.jobs) + len(self.timers)

    def next_event(self) -> Event | None:
        """The next thing the world reports, or None when nothing is in flight."""
        rng = self.rng
        live = self.state.status in (MissionStatus.ACTIVE, MissionStatus.PAUSED)
        if live and rng.random() < 0.005:
            return AbortRequested()
        paused = self.state.status is MissionStatus.PAUSED
        if paused and self.resumes < 3 and (not self.pending_work() or rng.random() < 0.1):
            self.resumes += 1
            if rng.random() < 0.5:
                return self._review()
            return ResumeRequested(retry_failed=rng.random() < 0.5)
        if live and self.changes < 3 and rng.random() < 0.05:
            return self._change_tasks()
        if live and self.operations < 3 and rng.random() < 0.03:
            return self._operate()
        if continuable(self.state) and self.continues < 2 and rng.random() < 0.5:
            self.continues += 1
            return self._continue()
        # Retry timers fire like any job; timeouts and the deadline are rarer, so runs get far.
        retries = sorted(k for k in self.timers if k[0] == "retry")
        alarms = sorted(k for k in self.timers if k[0] != "retry")
        if alarms and (rng.random() < 0.03 or not (self.jobs or retries)):
            return self._fire(rng.choice(alarms))
        if not (self.jobs or retries):
            return None
        pick = rng.randrange(len(self.jobs) + len(retries))
        if pick >= len(self.jobs):
            return self._fire(retries[pick - len(self.jobs)])
        return self._work_on(self.jobs.pop(pick))

    def _fire(self, timer: tuple[str, str]) -> Event:
        kind, key = timer
        self.now = max(self.now, self.timers.pop(timer))
        event = timer_event(kind, key)
        assert event is not None, timer
        if isinstance(event, TaskTimedOut):
            self.jobs = [j for j in self.jobs if j != ("running", event.task_id, str(event.attempt))]
        return event

    def _work_on(self, job: tuple[str, ...]) -> Event:
        """The agent (or judge) reports on one attempt."""
        rng = self.rng
        kind, task_id, attempt_text = job
        attempt = int(attempt_text)
        self.now += timedelta(seconds=1)
        if kind == "start":
            self.jobs.append(("running", task_id, attempt_text))
            return TaskClaimed(task_id, attempt, "worker-1")
        if kind == "assess":
            if rng.random() < 0.1:
                return AssessmentScored(task_id, attempt, None, (), "judge unavailable", rng.choice(CODES))
            score = round(rng.uniform(2.0, 5.0), 2)
            criteria = ({"criterion": "is good", "score": score, "reason": f"reason {score}"},)
            return AssessmentScored(task_id, attempt, score, criteria)
        roll = rng.random()
        if roll < 0.15 and self.chunks < 10:
            self.chunks += 1
            self.jobs.append(job)
            return TaskOutputProduced(task_id, attempt, "chunk")
        if roll < 0.25 and self.losses < 3:
            self.losses += 1
            return WorkerLost(task_id, attempt)
        if roll < 0.4:
            code = rng.choice(CODES) if rng.random() < 0.3 else ErrorCode.AGENT_ERROR
            return TaskFailed(task_id, attempt, "agent error", code)
        return TaskFinished(task_id, attempt, f"output of {task_id}#{attempt}")

    def _review(self) -> Event:
        """A person decides at what waits (often the redo of a task a checkpoint does not wait for)."""
        rng = self.rng
        decision = rng.choice([ReviewDecision.APPROVE, ReviewDecision.REQUEST_CHANGES, ReviewDecision.REJECT])
        titles = [t.title for t in self.state.spec.tasks]
        redo = tuple(rng.sample(titles, k=1)) if rng.random() < 0.3 else ()
        return ReviewSubmitted(decision, "make it better" if rng.random() < 0.9 else None, redo, "key_1", "ops")

    def _operate(self) -> Event:
        """An operator cancels or retries one task (often one where it does not apply)."""
        self.operations += 1
        target = self.rng.choice(sorted(self.state.tasks))
        roll = self.rng.random()
        if roll < 0.2:
            return ReassessRequested(target)
        return TaskCancelRequested(target) if roll < 0.6 else TaskRetryRequested(target)

    def _continue(self) -> Event:
        """An operator continues a failed run: a resume with retryFailed, or the retry of one task."""
        dead = sorted(t.task_id for t in self.state.tasks.values() if t.status in _DEAD)
        if dead and self.rng.random() < 0.5:
            target = self.rng.choice(dead)
            return ReassessRequested(target) if self.rng.random() < 0.3 else TaskRetryRequested(target)
        return ResumeRequested(retry_failed=True)

    def _change_tasks(self) -> Event:
        self.changes += 1
        rng = self.rng
        titles = [t.title for t in self.state.spec.tasks]
        roll = rng.random()
        if roll < 0.5:
            deps = rng.sample(titles, k=min(len(titles), rng.randint(0, 2)))
            return TaskAdded(_task(f"n{self.changes}", deps, rng))
        never_started = [t for t in self.state.tasks.values() if t.status is TaskStatus.PENDING and t.attempt == 0]
        if not never_started:
            return TaskAdded(_task(f"n{self.changes}", [], rng))
        target = rng.choice(never_started)
        if roll < 0.75:
            return TaskRemoved(target.task_id)
        current = next(t for t in self.state.spec.tasks if t.id == target.task_id)
        return TaskUpdated(TaskSpec.from_document({**current.to_document(), "priority": rng.randint(0, 5)}))


_DEAD = frozenset({TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED})


def continuable(state: RunState) -> bool:
    """A run an operator may continue: it failed because tasks failed or were cancelled."""
    return state.status is MissionStatus.FAILED and state.failure_reason in CONTINUABLE_FAILURES


def _task(task_id: str, deps: list[str], rng: random.Random) -> TaskSpec:
    doc: dict[str, Any] = {
        "id": task_id,
        "title": task_id,
        "description": "",
        "assignTo": rng.choice(AGENTS),
        "dependsOn": deps,
    }
    if rng.random() < 0.5:
        doc["expectations"] = [{"criterion": "is good"}]
    return TaskSpec.from_document(doc)


def run_mission(spec: MissionSpec, seed: int, watch: Callable[[Transition], None] = lambda _: None) -> Shell:
    """Run a mission to its end (or a pause after three resumes); every transition is watched."""
    first = start_run("run_1", "msn_1", spec, T0)
    shell = Shell(rng=random.Random(seed), state=first.state)
    shell.absorb(first)
    for _ in range(MAX_STEPS):
        event = shell.next_event()
        if event is None:
            return shell
        before = shell.state
        decision = decide(before, event, shell.now)
        watch(Transition(before, event, shell.now, decision))
        shell.state = decision.state
        shell.absorb(decision)
    raise AssertionError(f"the run did not come to rest within {MAX_STEPS} steps")


def transitions(spec: MissionSpec, seed: int) -> Iterator[Transition]:
    seen: list[Transition] = []
    run_mission(spec, seed, seen.append)
    return iter(seen)


seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_same_state_and_event_always_give_an_equal_decision(spec: MissionSpec, seed: int) -> None:
    assert start_run("r", "m", spec, T0) == start_run("r", "m", spec, T0)
    for t in transitions(spec, seed):
        assert decide(t.before, t.event, t.now) == t.decision


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_a_duplicate_of_an_applied_event_changes_nothing(spec: MissionSpec, seed: int) -> None:
    for t in transitions(spec, seed):
        if t.decision.ignored or isinstance(t.event, ResumeRequested):
            continue  # a resume is a command: a second one after a new pause is a new decision
        again = decide(t.decision.state, t.event, t.now)
        assert again.state == t.decision.state
        if isinstance(t.event, TaskOutputProduced):
            assert [type(e) for e in again.effects] == [PublishEvent]  # relayed again, state untouched
        elif isinstance(t.event, WorkerLost) and again.effects:
            assert [type(e) for e in again.effects] == [AssessTask]  # the judge is asked again
        else:
            assert again.effects == () and again.ignored


def arbitrary_events(task_ids: list[str]) -> st.SearchStrategy[Event]:
    ids = st.sampled_from([*task_ids, "ghost"])
    attempts = st.integers(0, 6)
    return st.one_of(
        st.builds(TaskClaimed, ids, attempts, st.just("w")),
        st.builds(TaskOutputProduced, ids, attempts, st.text(max_size=5)),
        st.builds(TaskFinished, ids, attempts, st.text(max_size=5)),
        st.builds(TaskFailed, ids, attempts, st.text(max_size=5)),
        st.builds(TaskTimedOut, ids, attempts),
        st.builds(WorkerLost, ids, attempts),
        st.builds(AssessmentScored, ids, attempts, st.none() | st.floats(1, 5)),
        st.builds(RetryDue, ids, attempts),
        st.builds(ResumeRequested, st.booleans()),
        st.just(AbortRequested()),
        st.just(DeadlineReached()),
        st.builds(TaskRemoved, ids),
        st.builds(TaskRetryRequested, ids),
        st.builds(TaskCancelRequested, ids),
        st.builds(ReassessRequested, ids),
        st.builds(ReviewSubmitted, st.sampled_from(list(ReviewDecision)), st.none() | st.text(max_size=5)),
        st.builds(CheckpointTimedOut, st.integers(-1, 3)),
        st.builds(ApprovalTimedOut, ids, attempts),
        st.builds(DelayElapsed, st.integers(-1, 3)),
        ids.map(lambda i: TaskAdded(TaskSpec(title=f"new {i}", description="", assign_to="dev", id=f"new-{i}"))),
        ids.map(
            lambda i: TaskUpdated(TaskSpec(title=f"changed {i}", description="", assign_to="dev", id=i, priority=7))
        ),
    )


@PROPERTY_SETTINGS
@given(missions(), seeds, st.data())
def test_a_finished_run_stays_finished_under_any_event(spec: MissionSpec, seed: int, data: st.DataObject) -> None:
    """...except the two commands that continue a run which failed because tasks failed."""
    shell = run_mission(spec, seed)
    state = shell.state
    if state.status not in TERMINAL_RUN_STATUSES:
        state = decide(state, AbortRequested(), shell.now).state
    events = data.draw(st.lists(arbitrary_events(list(state.tasks)), max_size=20))
    for event in events:
        decision = decide(state, event, shell.now)
        continues = isinstance(event, (TaskRetryRequested, ReassessRequested)) or event == ResumeRequested(
            retry_failed=True
        )
        if continuable(state) and continues and not decision.ignored:
            assert decision.state.status is MissionStatus.ACTIVE or decision.state.status in TERMINAL_RUN_STATUSES
            continue
        assert decision.ignored and decision.effects == () and decision.state is state


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_continuing_a_failed_run_never_runs_a_completed_task_again(spec: MissionSpec, seed: int) -> None:
    """...except, for a resume with retryFailed, a low-scoring afterTask of a blocked gate (the
    gate's own rule: it is judged again after they re-run)."""
    for t in transitions(spec, seed):
        if t.before.status is not MissionStatus.FAILED or t.decision.ignored:
            continue
        assert t.before.failure_reason in CONTINUABLE_FAILURES
        regated: set[str] = set()
        if isinstance(t.event, ResumeRequested):
            index = t.before._derived()
            for i, gate in enumerate(t.before.gates):
                if gate is GateStatus.BLOCKED:
                    regated.update(index.gate_after[i])
        for task_id, before in t.before.tasks.items():
            if before.status is TaskStatus.COMPLETED and task_id not in regated:
                assert t.decision.state.tasks[task_id] == before
                assert not any(isinstance(e, StartTask) and e.task_id == task_id for e in t.decision.effects)


@PROPERTY_SETTINGS
@given(missions(), seeds, st.data())
def test_any_event_at_any_point_is_decided_without_raising(spec: MissionSpec, seed: int, data: st.DataObject) -> None:
    states = [t.before for t in transitions(spec, seed)]
    for state in data.draw(st.lists(st.sampled_from(states), max_size=5)) if states else []:
        event = data.draw(arbitrary_events(list(state.tasks)))
        decision = decide(state, event, T0 + timedelta(hours=1))
        assert decision == decide(state, event, T0 + timedelta(hours=1))
        if decision.ignored:
            assert decision.effects == () and decision.state is state


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_failed_attempts_never_exceed_the_retry_policy_budget(spec: MissionSpec, seed: int) -> None:
    for t in transitions(spec, seed):
        state = t.decision.state
        by_id = {task.id: task for task in state.spec.tasks}
        for task in state.tasks.values():
            assert task.failed_attempts <= max_attempts(by_id[task.task_id])
            # (a side effect whose outcome is unknown fails by a person's or a timeout's decision)
            if task.status is TaskStatus.FAILED and not (task.error or "").endswith(UNKNOWN_OUTCOME_ERROR):
                # Only a failure no retry can fix ends a task before its budget is spent.
                exhausted = task.failed_attempts == max_attempts(by_id[task.task_id])
                assert exhausted or "not retried: " in (task.error or "")


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_a_run_driven_by_a_random_agent_always_ends_finished_or_paused(spec: MissionSpec, seed: int) -> None:
    shell = run_mission(spec, seed)  # raises if it does not come to rest within MAX_STEPS
    state = shell.state
    assert state.status in TERMINAL_RUN_STATUSES or state.status is MissionStatus.PAUSED
    if state.status in TERMINAL_RUN_STATUSES:
        assert all(task.status in TERMINAL_TASK_STATUSES for task in state.tasks.values())
        assert state.finished_at is not None
        assert state.status is not MissionStatus.COMPLETED or all(
            task.status is TaskStatus.COMPLETED for task in state.tasks.values()
        )


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_an_active_run_always_has_work_in_flight(spec: MissionSpec, seed: int) -> None:
    def watch(t: Transition) -> None:
        state = t.decision.state
        if state.status is MissionStatus.ACTIVE:
            busy = {TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.ASSESSING}
            assert any(task.status in busy or task.retry_at is not None for task in state.tasks.values()) or any(
                d.status is DelayStatus.WAITING for d in state.delays
            )
        assert (state.status is MissionStatus.PAUSED) == (state.pause_reason is not None)

    run_mission(spec, seed, watch)


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_concurrency_limits_are_never_exceeded(spec: MissionSpec, seed: int) -> None:
    def watch(t: Transition) -> None:
        state = t.decision.state
        busy = [task for task in state.tasks.values() if task.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)]
        if state.spec.max_concurrency is not None:
            assert len(busy) <= state.spec.max_concurrency
        for agent in state.spec.agents_by_name().values():
            if agent.max_concurrency is not None:
                assert sum(task.agent == agent.name for task in busy) <= agent.max_concurrency

    run_mission(spec, seed, watch)


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_every_published_event_names_its_mission_and_run(spec: MissionSpec, seed: int) -> None:
    for t in transitions(spec, seed):
        for effect in t.decision.effects:
            if isinstance(effect, PublishEvent):
                assert (effect.data["missionId"], effect.data["runId"]) == ("msn_1", "run_1")
                json.dumps(effect.data)


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_run_state_round_trips_through_json(spec: MissionSpec, seed: int) -> None:
    for t in transitions(spec, seed):
        document = json.loads(json.dumps(t.decision.state.to_json()))
        restored = RunState.from_json(document)
        assert restored == t.decision.state
        assert decide(restored, t.event, t.now) == decide(t.decision.state, t.event, t.now)


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_the_incremental_tally_always_matches_a_fresh_count(spec: MissionSpec, seed: int) -> None:
    for t in transitions(spec, seed):
        state = t.decision.state
        carried = state._counted()
        assert carried.same_counts_as(_Tally.of(state.tasks, state._derived()))


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_a_decision_names_every_task_it_changed_and_no_other(spec: MissionSpec, seed: int) -> None:
    for t in transitions(spec, seed):
        if t.decision.ignored:
            continue
        before, after = t.before.tasks, t.decision.state.tasks
        replaced = {i for i in before.keys() | after.keys() if before.get(i) is not after.get(i)}
        assert t.decision.changed_tasks is not None
        # Every replaced task is named; a named task was replaced (possibly by an equal value).
        assert replaced <= t.decision.changed_tasks <= before.keys() | after.keys()
        assert all(before.get(i) is not after.get(i) for i in t.decision.changed_tasks)


def _failure_code(event: Event, before: RunState, after: RunState) -> ErrorCode | None:
    """The code of the failed attempt ``event`` reported, when the decision applied it as one."""
    if isinstance(event, TaskFailed):
        return ErrorCode(event.code)
    if isinstance(event, TaskTimedOut):
        return ErrorCode.TIMEOUT
    if isinstance(event, AssessmentScored) and after.tasks[event.task_id].status is not TaskStatus.COMPLETED:
        if event.error is not None:
            return ErrorCode(event.error_code or ErrorCode.ASSESSMENT_FAILED)
        return ErrorCode.LOW_SCORE if event.score is not None else ErrorCode.ASSESSMENT_FAILED
    return None


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_every_failed_attempt_is_streamed_as_one_error_event_with_its_code(spec: MissionSpec, seed: int) -> None:
    for t in transitions(spec, seed):
        errors = [e.data for e in t.decision.effects if isinstance(e, PublishEvent) and e.type == "error"]
        code = None if t.decision.ignored else _failure_code(t.event, t.before, t.decision.state)
        task_errors = [e for e in errors if "taskId" in e]
        if isinstance(t.event, ResumeRequested) and not t.decision.ignored:
            # A side-effecting task whose outcome is unknown, not approved again, fails with an error.
            unapproved = {
                task_id
                for task_id, task in t.before.tasks.items()
                if task.status is TaskStatus.AWAITING_APPROVAL and not t.event.retry_failed
            }
            assert {e["taskId"] for e in task_errors} == unapproved
            assert all(e["code"] == ErrorCode.OUTCOME_UNKNOWN for e in task_errors)
            continue
        if isinstance(t.event, ApprovalTimedOut) and not t.decision.ignored:
            # An approval that timed out into "fail" is that same decision, taken by the clock.
            failed = {
                task_id
                for task_id, task in t.before.tasks.items()
                if task.status is TaskStatus.AWAITING_APPROVAL
                and t.decision.state.tasks[task_id].status is TaskStatus.FAILED
            }
            assert {e["taskId"] for e in task_errors} == failed
            assert all(e["code"] == ErrorCode.OUTCOME_UNKNOWN for e in task_errors)
            continue
        if code is None:
            assert not task_errors
            continue
        task_id = t.event.task_id  # type: ignore[union-attr]
        assert len(task_errors) == 1
        (error,) = task_errors
        assert error["code"] == code.value and error["taskId"] == task_id
        assert error["attempt"] == t.before.tasks[task_id].attempt and error["message"]
        assert error["willRetry"] == (t.decision.state.tasks[task_id].status is not TaskStatus.FAILED)


@PROPERTY_SETTINGS
@given(missions(), seeds)
def test_a_failure_no_retry_can_fix_is_never_retried_with_the_same_agent_and_model(
    spec: MissionSpec, seed: int
) -> None:
    retried_after: dict[str, tuple[str | None, str | None]] = {}  # task -> agent and model not to use again
    for t in transitions(spec, seed):
        after = t.decision.state
        for effect in t.decision.effects:
            if isinstance(effect, StartTask) and effect.task_id in retried_after:
                assert (effect.agent, effect.model) != retried_after.pop(effect.task_id)
        if isinstance(t.event, ResumeRequested):
            retried_after.clear()  # a resume with retryFailed gives a fresh budget, on purpose
        code = None if t.decision.ignored else _failure_code(t.event, t.before, after)
        if code in NON_RETRYABLE:
            task_id = t.event.task_id  # type: ignore[union-attr]
            failed = t.before.tasks[task_id]
            if after.tasks[task_id].status is not TaskStatus.FAILED:
                retried_after[task_id] = (failed.agent, failed.model)
