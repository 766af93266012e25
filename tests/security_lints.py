"""Catalog queries for the security rules of Supabase's database linter (splinter).

Each query is written from the rule's published description, not from
its SQL, and returns one row per finding, naming the object:

* function_search_path_mutable: a function outside the system schemas
  and not part of an extension has no ``search_path`` of its own, so
  objects it names are looked up in the caller's search_path. Procedures
  are left out, as the rule's name says: PostgreSQL forbids transaction
  control in a procedure that has a SET clause.
* rls_disabled_in_public: a table in a schema the HTTP API exposes has
  row-level security disabled.
* extension_in_public: an extension is registered in schema public.
* security_definer_function_executable: a SECURITY DEFINER function may
  be executed by anon or authenticated. The rule covers the exposed
  schemas; this query checks every schema outside pg_catalog and
  information_schema, which is stricter.
"""

from __future__ import annotations

import psycopg

# The queries run with parameters, so a literal % is written %%.

# Schemas that PostgREST serves on a default Supabase project.
EXPOSED_SCHEMAS = ("public",)
API_ROLES = ("anon", "authenticated")

LINTS = {
    "function_search_path_mutable": """
        SELECT format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prokind = 'f'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_%%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
          AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) AS setting
                          WHERE setting LIKE 'search\\_path=%%')
    """,
    "rls_disabled_in_public": """
        SELECT format('%%I.%%I', n.nspname, c.relname)
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND n.nspname = ANY(%(exposed)s)
          AND NOT c.relrowsecurity
    """,
    "extension_in_public": """
        SELECT e.extname FROM pg_extension e WHERE e.extnamespace = 'public'::regnamespace
    """,
    "security_definer_function_executable": """
        SELECT format('%%I.%%I(%%s) by %%s', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), r.rolname)
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        CROSS JOIN pg_roles r
        WHERE p.prosecdef
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND r.rolname = ANY(%(roles)s)
          AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
    """,
}


def run_lints(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Return the findings of every rule, by rule name; a clean database gives empty lists."""
    params = {"exposed": list(EXPOSED_SCHEMAS), "roles": list(API_ROLES)}
    findings: dict[str, list[str]] = {}
    for name, query in LINTS.items():
        findings[name] = sorted(row[0] for row in conn.execute(query, params))
    return findings
