"""A tiny run of the benchmark keeps it working. Its numbers are not checked."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from rich.console import Console

from bench import database, markdown, report, tick_bench, workloads
from session_status import pgcron
from session_status.sandbox import Sandbox

SIZES = (1500, 3000)
DUE = 40


@pytest.fixture(scope="module")
def results() -> report.Results:
    args = tick_bench.parse_args(
        [
            "--sizes",
            ",".join(map(str, SIZES)),
            "--repeat",
            "1",
            "--due",
            str(DUE),
            "--backlog",
            "500",
            "--batch-size",
            "200",
            "--app-seconds",
            "0.3",
            "--no-write",
        ]
    )
    return tick_bench.run_benchmark(args, Console(file=io.StringIO(), width=200))


def test_bench_measures_every_cell(results: report.Results) -> None:
    assert [size.size for size in results.sizes] == list(SIZES)
    for size in results.sizes:
        assert size.due == DUE
        for scenario in report.SCENARIOS:
            for method in report.METHODS:
                assert len(size.timings[(scenario, method)]) == 1
                assert len(size.server_timings[(scenario, method)]) == 1
                assert size.summary(scenario, method).median > 0
        assert len(size.back_to_back) == 1


def test_bench_computes_ratios(results: report.Results) -> None:
    largest = results.largest
    for scenario in report.SCENARIOS:
        assert largest.ratio(scenario, "naive", "ours") is not None
        assert largest.ratio(scenario, "naive", "ours", server=True) is not None
    assert largest.ratio("due", "ours", "floor") is not None


def test_bench_judges_every_target(results: report.Results) -> None:
    keys = [target.key for target in results.targets]
    assert keys == ["idle", "due", "job", "floor", "growth", "catch_up", "app_p99"]
    for target in results.targets:
        assert target.passed in (True, False)
        if target.passed is False:
            assert target.shortfall


def test_bench_catch_up_clears_backlog(results: report.Results) -> None:
    assert results.catch_up is not None
    assert results.catch_up.backlog > 0
    assert results.catch_up.changed == results.catch_up.backlog
    assert results.baseline is not None
    assert results.baseline.all()


def test_bench_floor_mirrors_ours(results: report.Results) -> None:
    floor = results.largest.floor
    assert floor is not None
    assert floor.history_mode == "copied by the floor"
    assert floor.writes_ours["sessions"] == (0, DUE, 0)
    assert floor.writes_ours[workloads.HISTORY_TABLE] == (DUE, 0, 0)
    assert floor.writes_floor == floor.writes_ours
    assert floor.trigger_calls_ours == {"sessions_guard_status": DUE}
    assert floor.trigger_calls_floor == floor.trigger_calls_ours
    assert floor.mirrors_ours


def test_bench_plans_show_index_scans(results: report.Results) -> None:
    ours = [plan for title, plan in results.plans.items() if title.startswith("ours")]
    assert any("sessions_due_to_complete_idx" in plan for plan in ours)
    assert any("sessions_due_to_open_idx" in plan for plan in ours)
    naive = [plan for title, plan in results.plans.items() if title.startswith("naive")]
    assert naive
    assert all("Seq Scan on sessions_naive" in plan for plan in naive)


def test_bench_prints_tables_and_verdicts(results: report.Results) -> None:
    console = Console(file=io.StringIO(), width=200)
    report.print_results(console, results)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "naive / ours" in text
    assert "ours / floor" in text
    assert re.search(r"\b(PASS|MISS)\b", text)


def test_bench_markdown_has_sections(results: report.Results) -> None:
    text = markdown.render(results)
    for heading in ("## Conditions", "## Tick time", "## Catch-up", "## Targets", "## Plans"):
        assert heading in text
    assert "PostgreSQL" in text
    assert f"| {SIZES[-1]:,} | {DUE} |" in text


def test_bench_rejects_invalid_arguments() -> None:
    with pytest.raises(SystemExit):
        tick_bench.parse_args(["--sizes", "ten"])
    with pytest.raises(SystemExit):
        tick_bench.parse_args(["--sizes", "100", "--due", "200"])
    with pytest.raises(SystemExit):
        tick_bench.parse_args(["--repeat", "0"])


HISTORY_BY_TRIGGER = """
CREATE TABLE session_status_transitions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id bigint NOT NULL,
    old_status text NOT NULL,
    new_status text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.session_status_transitions (session_id, old_status, new_status)
    VALUES (NEW.id, OLD.status, NEW.status);
    RETURN NULL;
END $$;
CREATE TRIGGER record_transition AFTER UPDATE OF status ON sessions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION record_transition();
"""

# The function writes the history itself: the original renamed, wrapped by
# one that records the sessions whose status changed in this transaction.
HISTORY_BY_FUNCTION = """
CREATE TABLE session_status_transitions (
    id bigserial PRIMARY KEY,
    session_id bigint NOT NULL,
    new_status text NOT NULL,
    as_of timestamptz NOT NULL
);
ALTER FUNCTION advance_session_statuses(timestamptz, integer) RENAME TO advance_without_history;
CREATE FUNCTION advance_session_statuses(as_of timestamptz, max_transitions integer DEFAULT NULL,
                                         OUT opened bigint, OUT completed bigint)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT a.opened, a.completed INTO opened, completed FROM advance_without_history(as_of, max_transitions) AS a;
    INSERT INTO session_status_transitions (session_id, new_status, as_of)
    SELECT id, status, as_of FROM sessions WHERE xmin::text = (pg_current_xact_id()::text::numeric % 4294967296)::text;
END $$;
"""


@pytest.fixture(scope="module")
def bench_server() -> Iterator[Sandbox]:
    with Sandbox(settings={"shared_preload_libraries": "'pg_cron,pg_stat_statements'"}) as server:
        yield server


# The last revision without the package's own history table, where the
# stand-in tables above can be created.
BEFORE_HISTORY = "session_status_0004"


def create_database_at(server: Sandbox, dbname: str, revision: str) -> None:
    """Create ``dbname`` migrated to ``revision`` without its pg_cron jobs, as the benchmark's databases are."""
    server.drop_database(dbname)
    server.create_database(dbname)
    command.upgrade(database.alembic_config(server.url(dbname)), revision)
    database.remove_jobs(server, dbname)


@pytest.mark.parametrize(
    ("schema", "mode"),
    [
        (HISTORY_BY_TRIGGER, "written by a trigger for both"),
        (HISTORY_BY_FUNCTION, "copied by the floor"),
        (None, "copied by the floor"),
    ],
    ids=["trigger", "function", "package-table"],
)
def test_floor_writes_history_as_ours(bench_server: Sandbox, schema: str | None, mode: str) -> None:
    if schema is None:
        # At head the package's tick writes its own history table.
        database.create_migrated_database(bench_server, "history")
    else:
        create_database_at(bench_server, "history", BEFORE_HISTORY)
    with bench_server.connect("history") as conn:
        conn.execute("SET TimeZone = 'UTC'")
        has_history = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (workloads.HISTORY_TABLE,)).fetchone()
        assert has_history == (schema is None,)
        as_of, due_set = database.load_sessions(conn, 1000, 20)
        if schema is not None:
            conn.execute(schema)

        def restore() -> None:
            database.restore_due_set(conn, due_set, naive=False)

        floor = workloads.build_floor(conn, as_of, due_set, restore)

        assert floor.history_mode == mode
        assert floor.writes_ours[workloads.HISTORY_TABLE][0] == len(due_set)
        assert floor.writes_floor == floor.writes_ours
        assert floor.trigger_calls_ours["sessions_guard_status"] == len(due_set)
        assert floor.trigger_calls_floor == floor.trigger_calls_ours
        if mode == "copied by the floor":
            assert floor.history_rows == len(due_set)
            assert floor.history_columns

        restore()
        assert workloads.run_floor(conn, floor) == len(due_set)
        history = conn.execute(f"SELECT count(*) FROM {workloads.HISTORY_TABLE}").fetchone()
        assert history is not None
        assert history[0] == len(due_set)


def test_load_leaves_nothing_due(bench_server: Sandbox) -> None:
    database.create_migrated_database(bench_server, "load")
    with bench_server.connect("load") as conn:
        conn.execute("SET TimeZone = 'UTC'")
        as_of, due_set = database.load_sessions(conn, 2000, 30)
        assert len(due_set.to_open) + len(due_set.to_complete) == 30

        assert workloads.run_ours(conn, as_of) == 0
        database.restore_due_set(conn, due_set, naive=False)
        row = conn.execute("SELECT * FROM advance_session_statuses(%s)", (as_of,)).fetchone()
        assert row == (len(due_set.to_open), len(due_set.to_complete))

        database.restore_due_set(conn, due_set, naive=True)
        assert workloads.run_naive(conn, as_of) == 30
        assert workloads.run_naive(conn, as_of + timedelta(microseconds=1)) == 0
        assert isinstance(as_of, datetime)
        assert as_of.tzinfo is not None
        assert as_of <= datetime.now(UTC)


def test_bench_plans_label_every_statement(results: report.Results) -> None:
    at = f"{SIZES[-1]:,} sessions"
    labels = [
        f"{pass_name} pass: {step}"
        for pass_name in ("completing", "opening")
        for step in ("lock due rows", "update", "history insert")
    ]
    for scenario in ("idle", f"{DUE} due"):
        assert f"ours, {scenario}, {at}: due check" in results.plans
        assert f"ours, {scenario}, {at}: the call" in results.plans
    # An idle tick returns after the due check: no pass runs.
    for label in labels:
        assert f"ours, {DUE} due, {at}: {label}" in results.plans
        assert f"ours, idle, {at}: {label}" not in results.plans
    assert f"ours, {DUE} due, {at}: notification" in results.plans
    assert not any(": statement " in title for title in results.plans)


def test_bench_job_batch_updates_by_primary_key(results: report.Results) -> None:
    title = markdown.job_batch_title(results)
    plan = markdown.find_plan(results, "completing pass: update", title_start=title)
    assert markdown.row_access(plan) == "primary key", plan
    # The catch-up's first batch changes 200 of 3,000 rows, where a Seq Scan
    # may be cheaper. A join back to sessions must never appear.
    plan = markdown.find_plan(results, "completing pass: update", title_start=title, catch_up=True)
    assert markdown.row_access(plan) in ("primary key", "Seq Scan"), plan


def test_shorten_arrays_keeps_short_ones() -> None:
    plan = "Index Cond: (id = ANY ('{1,2,3,4,5,6}'::bigint[]))\nFilter: (status = ANY ('{a,b}'::text[]))"
    shortened = workloads.shorten_arrays(plan)
    assert "'{1,2,3,4,...}'::bigint[] (6 values)" in shortened
    assert "'{a,b}'::text[]" in shortened


def test_index_entries_sums_loops() -> None:
    plan = (
        "->  Bitmap Index Scan on sessions_due_to_complete_idx  (cost=0.00..1.00 rows=9 width=0) "
        "(actual time=0.1..9.1 rows=1907 loops=2)\n"
        "->  Index Scan using sessions_pkey on sessions s  (cost=0.42..5.42 rows=1 width=14) "
        "(actual time=0.004..0.004 rows=1 loops=100)"
    )
    assert markdown.index_entries(plan, "sessions_due_to_complete_idx") == 3814
    assert markdown.index_entries(plan, "sessions_pkey") == 100
    assert markdown.index_entries(plan, "sessions_due_to_open_idx") == 0


def test_markdown_has_no_candidate(results: report.Results) -> None:
    text = markdown.render(results)
    assert "candidate" not in text


def test_migrated_database_has_no_jobs(bench_server: Sandbox) -> None:
    database.create_migrated_database(bench_server, "nojobs")
    names = [pgcron.job_name("nojobs", purpose) for purpose in database.JOB_PURPOSES]
    with bench_server.connect(bench_server.cron_database) as cron:
        left = cron.execute("SELECT jobname, database FROM cron.job WHERE jobname = ANY(%s)", (names,)).fetchall()
    assert left == []


def test_markdown_explains_every_miss(results: report.Results) -> None:
    for target in results.targets:
        assert markdown.miss_note(target.key, results), target.key
