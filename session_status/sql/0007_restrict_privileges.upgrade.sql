-- session-status 0007 (upgrade): only the owner may run the routines, and no
-- other role gets the table privileges that row-level security does not
-- govern.
--
-- Default privileges (ALTER DEFAULT PRIVILEGES ... GRANT ALL, as Supabase
-- sets them for anon and authenticated) hand every new table, sequence and
-- routine to other roles. Row-level security then decides which rows they
-- may SELECT, INSERT, UPDATE and DELETE, but not:
--   * EXECUTE on the tick, which would let any role advance statuses, and
--     on the history purge, which would let it delete the history;
--   * TRUNCATE, which empties the table whatever the policies say;
--   * TRIGGER, which lets a role attach its own trigger function, so that
--     the job, running as the owner, would execute that role's code;
--   * REFERENCES, which lets a role add a foreign key that blocks deletes
--     and the downgrade;
--   * the identity sequences: setval() or nextval() would make inserts
--     collide, and INSERT through an identity column needs no grant on it.
-- The objects are the sessions and session_status_transitions tables,
-- their identity sequences, the sessions_effective_status view and the
-- routines of the earlier revisions. Grants of other kinds (SELECT,
-- INSERT, UPDATE, DELETE) are left as they are: policies govern them.
-- Frozen: a later change is a new revision.

DO $do$
DECLARE
    v_grant record;
BEGIN
    FOR v_grant IN
        SELECT format('%s %I.%I(%s)',
                      CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                      n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) AS target,
               'ALL' AS privileges,
               a.grantee
        FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
        WHERE n.nspname = {{schema_name}}
          AND p.proname IN ('advance_session_statuses', 'advance_session_statuses_in_batches',
                            'sessions_guard_status', 'purge_session_status_transitions')
          AND a.grantee <> p.proowner
        UNION
        SELECT format('TABLE %I.%I', n.nspname, c.relname),
               CASE c.relkind WHEN 'S' THEN 'ALL' ELSE 'TRUNCATE, REFERENCES, TRIGGER' END,
               a.grantee
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
        WHERE n.nspname = {{schema_name}}
          AND c.oid IN (pg_catalog.to_regclass(pg_catalog.format('%I.sessions', {{schema_name}})),
                        pg_catalog.to_regclass(pg_catalog.pg_get_serial_sequence(
                            pg_catalog.format('%I.sessions', {{schema_name}}), 'id')),
                        pg_catalog.to_regclass(pg_catalog.format('%I.session_status_transitions', {{schema_name}})),
                        pg_catalog.to_regclass(pg_catalog.pg_get_serial_sequence(
                            pg_catalog.format('%I.session_status_transitions', {{schema_name}}), 'id')),
                        pg_catalog.to_regclass(pg_catalog.format('%I.sessions_effective_status', {{schema_name}})))
          AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE %s ON %s FROM %s CASCADE',
                       v_grant.privileges,
                       v_grant.target,
                       CASE WHEN v_grant.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_catalog.pg_get_userbyid(v_grant.grantee)) END);
        RAISE NOTICE 'session-status: revoked % on % from %', v_grant.privileges, v_grant.target,
            CASE WHEN v_grant.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(v_grant.grantee) END;
    END LOOP;
END
$do$;
