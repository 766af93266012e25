-- session-status 0003 (upgrade): the tick, advance_session_statuses(), and
-- the batching procedure that the pg_cron job calls.
-- Frozen: a later change is a new revision.

-- advance_session_statuses(as_of, max_transitions)
--
-- Moves every due session one step along the clock, judged at the single
-- instant as_of (default: now(), the start of the calling transaction):
--   * scheduled, open, full -> completed  once ends_at <= as_of
--     (a scheduled session whose end has passed skips open: catch-up);
--   * scheduled -> open                   once starts_at <= as_of < ends_at.
--     The opening pass checks ends_at too. The completing pass skips a row
--     that the app holds locked; if the app releases it before the opening
--     pass, it stays scheduled and the next call completes it, instead of
--     being opened after its end.
-- completed and cancelled rows are never read or written.
--
-- Returns how many sessions it opened and completed. A second call with the
-- same as_of changes nothing. At most max_transitions rows change per call
-- (NULL: no limit), completions first, each pass in order of the instant
-- the transition became due.
--
-- Concurrency: rows locked by another transaction are skipped, not waited
-- for, and are picked up by a later call. Each row is re-checked after it is
-- locked, so a change the app committed meanwhile (cancelled, full) is kept,
-- and two concurrent calls never apply the same transition twice. The tick
-- never waits for a row lock, so it takes no part in a deadlock. Rows are
-- locked FOR NO KEY UPDATE, the lock an UPDATE of a non-key column takes,
-- so an app transaction that inserts a row referencing a session (its
-- foreign key check holds FOR KEY SHARE) does not make the tick skip it.
--
-- Each pass collects the due ids first and updates them by primary key.
-- Joining the locked rows back to sessions in one UPDATE ... FROM lets the
-- planner choose a merge or hash join over the whole table when the limit
-- is large, which makes the job's batches cost the table size.
CREATE FUNCTION {{schema}}.advance_session_statuses(
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

    UPDATE {{schema}}.sessions AS s
    SET status = 'completed'
    WHERE s.id = ANY (ARRAY(
        SELECT d.id
        FROM {{schema}}.sessions AS d
        WHERE d.status IN ('scheduled', 'open', 'full')
          AND d.ends_at <= as_of
        ORDER BY d.ends_at
        LIMIT v_remaining
        FOR NO KEY UPDATE SKIP LOCKED
    ));
    GET DIAGNOSTICS completed = ROW_COUNT;

    v_remaining := v_remaining - completed;
    opened := 0;
    IF v_remaining > 0 THEN
        UPDATE {{schema}}.sessions AS s
        SET status = 'open'
        WHERE s.id = ANY (ARRAY(
            SELECT d.id
            FROM {{schema}}.sessions AS d
            WHERE d.status = 'scheduled'
              AND d.starts_at <= as_of
              -- IS TRUE keeps the planner from using ends_at for an index scan:
              -- it would read sessions_due_to_complete_idx for every future
              -- session, while this test only filters the few due rows.
              AND (d.ends_at > as_of) IS TRUE
            ORDER BY d.starts_at
            LIMIT v_remaining
            FOR NO KEY UPDATE SKIP LOCKED
        ));
        GET DIAGNOSTICS opened = ROW_COUNT;
    END IF;
END
$function$;

COMMENT ON FUNCTION {{schema}}.advance_session_statuses(timestamptz, integer) IS
    'session-status: opens and completes the sessions due at as_of; returns (opened, completed)';
REVOKE ALL ON FUNCTION {{schema}}.advance_session_statuses(timestamptz, integer) FROM PUBLIC;

-- advance_session_statuses_in_batches(as_of, batch_size)
--
-- Calls advance_session_statuses(as_of, batch_size) and commits after each
-- batch until a batch comes back short, so a backlog (after downtime, say)
-- is cleared by one call while no transaction changes more than batch_size
-- rows. A batch locks only the rows it changes, plus any row that another
-- transaction changed after the batch's snapshot and that no longer
-- qualifies when rechecked: PostgreSQL keeps that lock until the batch
-- commits. Every batch judges at the same as_of, taken once when the call
-- starts. This is what the pg_cron job runs.
--
-- It must be CALLed outside an explicit transaction block (pg_cron does so);
-- inside one, COMMIT fails and the caller should use the function instead.
-- NOTE: PostgreSQL forbids COMMIT in a procedure that has a SET clause, so
-- search_path cannot be pinned here; every name below is schema-qualified.
CREATE PROCEDURE {{schema}}.advance_session_statuses_in_batches(
    as_of timestamptz DEFAULT NULL,
    batch_size integer DEFAULT 10000
)
    LANGUAGE plpgsql
    SECURITY INVOKER
AS $procedure$
DECLARE
    v_as_of timestamptz := coalesce(as_of, pg_catalog.now());
    v_result record;
    v_opened bigint := 0;
    v_completed bigint := 0;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'invalid batch_size %: expected a positive number', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        SELECT * INTO v_result FROM {{schema}}.advance_session_statuses(v_as_of, batch_size);
        v_opened := v_opened + v_result.opened;
        v_completed := v_completed + v_result.completed;
        COMMIT;
        EXIT WHEN v_result.opened + v_result.completed < batch_size;
    END LOOP;
    IF v_opened + v_completed > 0 THEN
        RAISE LOG 'session-status: advanced sessions as of %: % opened, % completed', v_as_of, v_opened, v_completed;
    END IF;
END
$procedure$;

COMMENT ON PROCEDURE {{schema}}.advance_session_statuses_in_batches(timestamptz, integer) IS
    'session-status: advances all due sessions in batches of batch_size rows, committing after each batch';
REVOKE ALL ON PROCEDURE {{schema}}.advance_session_statuses_in_batches(timestamptz, integer) FROM PUBLIC;
