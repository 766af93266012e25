-- session-status 0003 (downgrade): drop the tick function and procedure.
-- Their schema is found through their 'session-status:' comments, not the
-- current configuration. Frozen: a later change is a new revision.

DO $do$
DECLARE
    v_routine regprocedure;
BEGIN
    FOR v_routine IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc p
        WHERE p.proname IN ('advance_session_statuses', 'advance_session_statuses_in_batches')
          AND pg_catalog.obj_description(p.oid, 'pg_proc') LIKE 'session-status:%'
    LOOP
        EXECUTE format('DROP ROUTINE %s', v_routine);
    END LOOP;
END
$do$;
