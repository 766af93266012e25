-- session-status 0002 (upgrade): create the pg_cron extension when this
-- database is pg_cron's own (cron.database_name). On other layouts the
-- revision creates it in the cron database through a second connection
-- instead, and does not run this file.
-- Frozen: a later change is a new revision.

DO $do$
BEGIN
    IF NOT 'pg_cron' = ANY (pg_catalog.string_to_array(
               pg_catalog.replace(pg_catalog.current_setting('shared_preload_libraries'), ' ', ''), ','))
    THEN
        RAISE EXCEPTION 'pg_cron is not loaded by this server'
            USING DETAIL = 'shared_preload_libraries is ''' || pg_catalog.current_setting('shared_preload_libraries') || '''.',
                  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name and restart PostgreSQL.';
    END IF;
    IF pg_catalog.current_database() <> coalesce(pg_catalog.current_setting('cron.database_name', true), 'postgres') THEN
        RAISE EXCEPTION 'this database is not pg_cron''s database'
            USING DETAIL = format('current database %I, cron.database_name %I.',
                                  pg_catalog.current_database(),
                                  pg_catalog.current_setting('cron.database_name', true)),
                  HINT = 'Run the migrations online: they schedule the job from the cron database.';
    END IF;
END
$do$;

-- pg_cron 1.4 puts its objects in schema cron, which its script creates,
-- but its control file names no schema, so without SCHEMA the extension
-- itself would be registered in the first schema of search_path (usually
-- public). pg_catalog keeps public free of extensions.
CREATE EXTENSION IF NOT EXISTS pg_cron SCHEMA pg_catalog;
