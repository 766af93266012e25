-- session-status 0006 (downgrade): drop purge_session_status_transitions().
-- Its schema is found through its 'session-status:' comment, not the
-- current configuration. The revision's Python code removes the jobs.
-- Frozen: a later change is a new revision.

DO $do$
DECLARE
    v_routine regprocedure;
BEGIN
    FOR v_routine IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc p
        WHERE p.proname = 'purge_session_status_transitions'
          AND pg_catalog.obj_description(p.oid, 'pg_proc') LIKE 'session-status:%'
    LOOP
        EXECUTE format('DROP FUNCTION %s', v_routine);
    END LOOP;
END
$do$;
