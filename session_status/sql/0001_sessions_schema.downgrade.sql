-- session-status 0001 (downgrade): drop the sessions table and its guard.
-- The schema is found through the table's 'session-status:' comment rather
-- than the current configuration, so the downgrade removes what the upgrade
-- created even if the schema setting changed in between. The table is
-- dropped without CASCADE: a foreign key from an app table stops the
-- downgrade instead of being dropped silently.
-- Frozen: a later change is a new revision.

DO $do$
DECLARE
    v_schema name;
BEGIN
    FOR v_schema IN
        SELECT n.nspname
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = 'sessions'
          AND c.relkind = 'r'
          AND pg_catalog.obj_description(c.oid, 'pg_class') LIKE 'session-status:%'
    LOOP
        EXECUTE format('DROP TABLE %I.sessions', v_schema);
        EXECUTE format('DROP FUNCTION IF EXISTS %I.sessions_guard_status()', v_schema);

        -- Drop the schema only if this package created it and nothing else
        -- lives in it any more.
        IF pg_catalog.obj_description(pg_catalog.to_regnamespace(quote_ident(v_schema)), 'pg_namespace')
               LIKE 'session-status:%'
        THEN
            BEGIN
                EXECUTE format('DROP SCHEMA %I', v_schema);
            EXCEPTION WHEN dependent_objects_still_exist THEN
                RAISE NOTICE 'schema % still contains other objects, so it was kept', v_schema;
            END;
        END IF;
    END LOOP;
END
$do$;
