-- session-status 0005 (downgrade): restore the 0003 tick, then drop the
-- view and the transition history.
-- The schema is found through the history table's 'session-status:'
-- comment, not the current configuration. The function below is a frozen
-- copy of 0003's advance_session_statuses(), written for format(): %1$s is
-- the schema, always double-quoted as 0003 wrote it, and %% a literal
-- percent sign. CREATE OR REPLACE keeps the
-- function's oid, so the pg_cron job's procedure and any grants stay valid.
-- Frozen: a later change is a new revision.

DO $do$
DECLARE
    v_schema name;
    v_quoted text;
BEGIN
    FOR v_schema IN
        SELECT n.nspname
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = 'session_status_transitions'
          AND c.relkind = 'r'
          AND pg_catalog.obj_description(c.oid, 'pg_class') LIKE 'session-status:%'
    LOOP
        v_quoted := '"' || pg_catalog.replace(v_schema, '"', '""') || '"';
        EXECUTE format($fmt$
CREATE OR REPLACE FUNCTION %1$s.advance_session_statuses(
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
        RAISE EXCEPTION 'invalid as_of %%: expected a finite timestamptz', coalesce(as_of::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Omit as_of to use now(), the start of the current transaction.';
    END IF;
    IF max_transitions IS NOT NULL AND max_transitions < 1 THEN
        RAISE EXCEPTION 'invalid max_transitions %%: expected a positive number or NULL', max_transitions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    UPDATE %1$s.sessions AS s
    SET status = 'completed'
    WHERE s.id = ANY (ARRAY(
        SELECT d.id
        FROM %1$s.sessions AS d
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
        UPDATE %1$s.sessions AS s
        SET status = 'open'
        WHERE s.id = ANY (ARRAY(
            SELECT d.id
            FROM %1$s.sessions AS d
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
$function$
$fmt$, v_quoted);

        EXECUTE format('COMMENT ON FUNCTION %I.advance_session_statuses(timestamptz, integer) IS %L', v_schema,
                       'session-status: opens and completes the sessions due at as_of; returns (opened, completed)');
        EXECUTE format('REVOKE ALL ON FUNCTION %I.advance_session_statuses(timestamptz, integer) FROM PUBLIC', v_schema);

        EXECUTE format('DROP VIEW IF EXISTS %I.sessions_effective_status', v_schema);
        EXECUTE format('DROP TABLE %I.session_status_transitions', v_schema);
    END LOOP;
END
$do$;
