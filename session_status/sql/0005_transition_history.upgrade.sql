-- session-status 0005 (upgrade): the transition history, the notification
-- sent when the tick commits, and the sessions_effective_status view.
-- Frozen: a later change is a new revision.

-- One row per transition that advance_session_statuses() applied.
--
-- Ids are committed in increasing order: only advance_session_statuses()
-- inserts rows, and it holds an EXCLUSIVE lock on this table from before
-- its first insert until its transaction ends. A transaction that commits
-- later therefore always has larger ids, and a consumer that remembers the
-- largest id it has read ("id > last_seen") misses no row.
CREATE TABLE {{schema}}.session_status_transitions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  bigint NOT NULL,
    from_status text NOT NULL,
    to_status   text NOT NULL,
    due_at      timestamptz NOT NULL,
    as_of       timestamptz NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT session_status_transitions_from_status_check
        CHECK (from_status IN ('scheduled', 'open', 'full')),
    CONSTRAINT session_status_transitions_to_status_check
        CHECK (to_status IN ('open', 'completed'))
);

COMMENT ON TABLE {{schema}}.session_status_transitions IS
    'session-status: transitions applied by advance_session_statuses(), in commit order of id; '
    'read rows with id > the last id seen';
COMMENT ON COLUMN {{schema}}.session_status_transitions.session_id IS
    'sessions.id; no foreign key, so the history outlives deleted sessions';
COMMENT ON COLUMN {{schema}}.session_status_transitions.due_at IS
    'instant the transition became due: starts_at for scheduled -> open, ends_at for -> completed';
COMMENT ON COLUMN {{schema}}.session_status_transitions.as_of IS
    'instant the tick judged at (its as_of argument); as_of - due_at is how late the clock was read';
COMMENT ON COLUMN {{schema}}.session_status_transitions.applied_at IS
    'start time of the transaction that applied the transition (now()); the retention job deletes by this column';

-- The primary key serves consumers (id > last_seen ORDER BY id); this index
-- serves the retention job and "transitions in the last hour".
CREATE INDEX session_status_transitions_applied_at_idx
    ON {{schema}}.session_status_transitions (applied_at);
CREATE INDEX session_status_transitions_session_id_idx
    ON {{schema}}.session_status_transitions (session_id);

DO $do$
BEGIN
    IF {{row_level_security}} THEN
        EXECUTE format('ALTER TABLE %I.session_status_transitions ENABLE ROW LEVEL SECURITY', {{schema_name}});
    END IF;
END
$do$;

-- advance_session_statuses(as_of, max_transitions): the 0003 tick, which
-- now also records each transition in session_status_transitions and
-- notifies listeners.
--
-- Moves every due session one step along the clock, judged at the single
-- instant as_of (default: now(), the start of the calling transaction):
--   * scheduled, open, full -> completed  once ends_at <= as_of
--     (a scheduled session whose end has passed skips open: catch-up);
--   * scheduled -> open                   once starts_at <= as_of < ends_at.
--     A row that the completing pass skipped because the app held it
--     locked stays scheduled until a later call completes it.
-- completed and cancelled rows are never read or written.
--
-- Returns how many sessions it opened and completed. A second call with the
-- same as_of changes nothing. At most max_transitions rows change per call
-- (NULL: no limit), completions first, each pass in order of the instant
-- the transition became due. History ids follow the same order.
--
-- Concurrency: rows locked by another transaction are skipped, not waited
-- for, and are picked up by a later call. Each row is re-checked after it is
-- locked, so a change the app committed meanwhile (cancelled, full) is kept,
-- and two concurrent calls never apply the same transition twice.
-- Rows are locked FOR NO KEY UPDATE, so an app insert that references a
-- session through a foreign key (FOR KEY SHARE) does not make the tick skip
-- it. Each pass collects the due ids first and updates them by primary key,
-- so no join over the whole table can enter the plan.
-- NOTE: the EXCLUSIVE lock on session_status_transitions (see the table)
-- makes a second concurrent tick wait until the first one's transaction
-- ends. The tick still never waits for a row lock of sessions, so a
-- deadlock cycle can include it only if the app itself locks
-- session_status_transitions.
--
-- Notification: when a call changes at least one row, it sends one
-- pg_notify on channel 'session_status' with the JSON payload
--   {"schema": "<schema>", "first_id": N, "last_id": M, "count": K}
-- PostgreSQL delivers it when the transaction commits, and drops it on
-- rollback. The payload has a fixed size (well under the 8000-byte limit)
-- whatever the number of rows, so a batch of 100 000 transitions sends one
-- short message. The notify lives in this function, not in a trigger on the
-- history table, because the function is the only writer and knows the
-- batch: a statement-level trigger would need a transition table only to
-- recompute the ids and count this function already has.
CREATE OR REPLACE FUNCTION {{schema}}.advance_session_statuses(
    as_of timestamptz DEFAULT now(),
    max_transitions integer DEFAULT NULL,
    OUT opened bigint,
    OUT completed bigint
)
    LANGUAGE plpgsql
    VOLATILE
    SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_remaining bigint := coalesce(max_transitions, 9223372036854775807);
    v_first_id bigint;
    v_last_id bigint;
    v_batch_first_id bigint;
    v_batch_last_id bigint;
    v_ids bigint[];
    v_from_statuses text[];
    v_due_ats timestamptz[];
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        RAISE EXCEPTION 'invalid as_of %: expected a finite timestamptz', coalesce(as_of::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Omit as_of to use now(), the start of the current transaction.';
    END IF;
    IF max_transitions IS NOT NULL AND max_transitions < 1 THEN
        RAISE EXCEPTION 'invalid max_transitions %: expected a positive number or NULL', max_transitions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Nothing due: return before taking the history lock and running the
    -- writing statements, so an idle tick costs two index probes. Each
    -- min() reads the first entry of the partial index whose predicate it
    -- repeats; an EXISTS would let the planner pick a sequential scan,
    -- since it cannot see that the ended rows are nearly all completed. A
    -- row that becomes due after this check is handled by the next call.
    IF coalesce((SELECT min(s.ends_at) FROM {{schema}}.sessions AS s
                 WHERE s.status IN ('scheduled', 'open', 'full')) > as_of, true)
       AND coalesce((SELECT min(s.starts_at) FROM {{schema}}.sessions AS s
                     WHERE s.status = 'scheduled') > as_of, true)
    THEN
        opened := 0;
        completed := 0;
        RETURN;
    END IF;

    LOCK TABLE {{schema}}.session_status_transitions IN EXCLUSIVE MODE;

    -- Completing pass: lock the due rows and keep their old status, then
    -- update them by primary key and record them in due order.
    SELECT coalesce(array_agg(d.id ORDER BY d.ends_at, d.id), '{}'),
           coalesce(array_agg(d.status ORDER BY d.ends_at, d.id), '{}'),
           coalesce(array_agg(d.ends_at ORDER BY d.ends_at, d.id), '{}')
    INTO v_ids, v_from_statuses, v_due_ats
    FROM (
        SELECT s.id, s.status, s.ends_at
        FROM {{schema}}.sessions AS s
        WHERE s.status IN ('scheduled', 'open', 'full')
          AND s.ends_at <= as_of
        ORDER BY s.ends_at
        LIMIT v_remaining
        FOR NO KEY UPDATE SKIP LOCKED
    ) AS d;

    UPDATE {{schema}}.sessions AS s
    SET status = 'completed'
    WHERE s.id = ANY (v_ids);
    GET DIAGNOSTICS completed = ROW_COUNT;

    WITH recorded AS (
        INSERT INTO {{schema}}.session_status_transitions (session_id, from_status, to_status, due_at, as_of)
        SELECT t.session_id, t.from_status, 'completed', t.due_at, as_of
        FROM unnest(v_ids, v_from_statuses, v_due_ats) WITH ORDINALITY AS t(session_id, from_status, due_at, ordinal)
        ORDER BY t.ordinal
        RETURNING id
    )
    SELECT min(r.id), max(r.id) INTO v_first_id, v_last_id
    FROM recorded AS r;

    v_remaining := v_remaining - completed;
    opened := 0;
    IF v_remaining > 0 THEN
        -- Opening pass: every locked row is 'scheduled', so no old status is kept.
        SELECT coalesce(array_agg(d.id ORDER BY d.starts_at, d.id), '{}'),
               coalesce(array_agg(d.starts_at ORDER BY d.starts_at, d.id), '{}')
        INTO v_ids, v_due_ats
        FROM (
            SELECT s.id, s.starts_at
            FROM {{schema}}.sessions AS s
            WHERE s.status = 'scheduled'
              AND s.starts_at <= as_of
              -- IS TRUE keeps the planner from using ends_at for an index scan:
              -- it would read sessions_due_to_complete_idx for every future
              -- session, while this test only filters the few due rows.
              AND (s.ends_at > as_of) IS TRUE
            ORDER BY s.starts_at
            LIMIT v_remaining
            FOR NO KEY UPDATE SKIP LOCKED
        ) AS d;

        UPDATE {{schema}}.sessions AS s
        SET status = 'open'
        WHERE s.id = ANY (v_ids);
        GET DIAGNOSTICS opened = ROW_COUNT;

        WITH recorded AS (
            INSERT INTO {{schema}}.session_status_transitions (session_id, from_status, to_status, due_at, as_of)
            SELECT t.session_id, 'scheduled', 'open', t.due_at, as_of
            FROM unnest(v_ids, v_due_ats) WITH ORDINALITY AS t(session_id, due_at, ordinal)
            ORDER BY t.ordinal
            RETURNING id
        )
        SELECT min(r.id), max(r.id) INTO v_batch_first_id, v_batch_last_id
        FROM recorded AS r;
        v_first_id := coalesce(v_first_id, v_batch_first_id);
        v_last_id := coalesce(v_batch_last_id, v_last_id);
    END IF;

    IF opened + completed > 0 THEN
        PERFORM pg_notify(
            'session_status',
            json_build_object(
                'schema', {{schema_name}},
                'first_id', v_first_id,
                'last_id', v_last_id,
                'count', opened + completed
            )::text
        );
    END IF;
END
$function$;

COMMENT ON FUNCTION {{schema}}.advance_session_statuses(timestamptz, integer) IS
    'session-status: opens and completes the sessions due at as_of, records each transition in '
    'session_status_transitions and notifies channel session_status; returns (opened, completed)';
REVOKE ALL ON FUNCTION {{schema}}.advance_session_statuses(timestamptz, integer) FROM PUBLIC;

-- Each session's status at now() (the start of the reading transaction),
-- derived from starts_at and ends_at whether or not the tick has run since.
-- The rules are the tick's: scheduled, open and full become completed once
-- ends_at has passed, and scheduled becomes open once starts_at has passed.
-- Every other stored status (full before its end, completed, cancelled) is
-- kept. Read the view where a status that lags by up to one schedule
-- interval is wrong. Read sessions.status for what the tick last stored,
-- which is what the history and the notifications describe.
CREATE VIEW {{schema}}.sessions_effective_status AS
SELECT
    s.id,
    CASE
        WHEN s.status IN ('scheduled', 'open', 'full') AND s.ends_at <= now() THEN 'completed'
        WHEN s.status = 'scheduled' AND s.starts_at <= now() THEN 'open'
        ELSE s.status
    END AS status,
    s.status AS stored_status,
    s.starts_at,
    s.ends_at,
    s.title,
    s.capacity
FROM {{schema}}.sessions AS s;

COMMENT ON VIEW {{schema}}.sessions_effective_status IS
    'session-status: status of each session at now(), derived from starts_at and ends_at; '
    'equals sessions.status right after a tick at now()';

-- With security_invoker (PostgreSQL 15 and later) the row-level security
-- policies of sessions apply to the role reading the view, not the view's
-- owner. Older servers have no such option.
-- NOTE: on PostgreSQL 14 and older the view reads sessions with its owner's
-- rights, so grant SELECT on it only to roles that may see every session.
DO $do$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::integer >= 150000 THEN
        EXECUTE format('ALTER VIEW %I.sessions_effective_status SET (security_invoker = true)', {{schema_name}});
    END IF;
END
$do$;
