-- session-status 0006 (upgrade): purge_session_status_transitions(), which
-- the retention job of the app database calls. The job itself, and the one
-- that trims cron.job_run_details in pg_cron's database, are scheduled by
-- the revision's Python code.
-- Frozen: a later change is a new revision.

-- Deletes the history rows applied more than older_than ago (by applied_at,
-- the transaction time of the tick) and returns how many it deleted.
-- A consumer that was disconnected for longer than older_than misses the
-- rows deleted meanwhile.
CREATE FUNCTION {{schema}}.purge_session_status_transitions(older_than interval)
    RETURNS bigint
    LANGUAGE plpgsql
    VOLATILE
    SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_deleted bigint;
BEGIN
    IF older_than IS NULL OR older_than <= interval '0' THEN
        RAISE EXCEPTION 'invalid older_than %: expected a positive interval', coalesce(older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM {{schema}}.session_status_transitions
    WHERE applied_at < now() - older_than;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RAISE LOG 'session-status: deleted % transition history rows older than %', v_deleted, older_than;
    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION {{schema}}.purge_session_status_transitions(interval) IS
    'session-status: deletes session_status_transitions rows applied more than older_than ago; returns the count';
REVOKE ALL ON FUNCTION {{schema}}.purge_session_status_transitions(interval) FROM PUBLIC;
