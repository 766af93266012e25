-- A proposed rewrite of advance_session_statuses() and its batching
-- procedure, created by the benchmark in the schema bench_candidate of its
-- own databases and measured beside the installed function. It is not part
-- of the migrations.
--
-- The only change: each pass is one UPDATE whose rows come from
-- id = ANY (ARRAY(SELECT ... FOR UPDATE SKIP LOCKED)). The sub-select runs
-- once, as an InitPlan, and the UPDATE finds its rows by primary key. The
-- installed form, UPDATE ... FROM (WITH due AS (...)) WHERE s.id = due.id,
-- leaves the join to the planner. With the job's LIMIT of 10,000 it chose,
-- at 100k and 1M sessions, a Hash Join or a Merge Join (by work_mem) that
-- reads every row of the table whenever anything is due (see
-- docs/benchmarks.md).
--
-- Semantics are unchanged: FOR UPDATE re-checks the sub-select's conditions
-- on the newest version of each row it locks and skips rows that no longer
-- match, and the UPDATE then changes only rows this transaction has locked.

CREATE SCHEMA bench_candidate;

CREATE FUNCTION bench_candidate.advance_session_statuses(
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
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_transitions IS NOT NULL AND max_transitions < 1 THEN
        RAISE EXCEPTION 'invalid max_transitions %: expected a positive number or NULL', max_transitions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    UPDATE public.sessions AS s
    SET status = 'completed'
    WHERE s.id = ANY (ARRAY(
        SELECT d.id
        FROM public.sessions AS d
        WHERE d.status IN ('scheduled', 'open', 'full')
          AND d.ends_at <= as_of
        ORDER BY d.ends_at
        LIMIT v_remaining
        FOR UPDATE SKIP LOCKED
    ));
    GET DIAGNOSTICS completed = ROW_COUNT;

    v_remaining := v_remaining - completed;
    opened := 0;
    IF v_remaining > 0 THEN
        UPDATE public.sessions AS s
        SET status = 'open'
        WHERE s.id = ANY (ARRAY(
            SELECT d.id
            FROM public.sessions AS d
            WHERE d.status = 'scheduled'
              AND d.starts_at <= as_of
            ORDER BY d.starts_at
            LIMIT v_remaining
            FOR UPDATE SKIP LOCKED
        ));
        GET DIAGNOSTICS opened = ROW_COUNT;
    END IF;
END
$function$;

CREATE PROCEDURE bench_candidate.advance_session_statuses_in_batches(
    as_of timestamptz DEFAULT NULL,
    batch_size integer DEFAULT 10000
)
    LANGUAGE plpgsql
    SECURITY INVOKER
AS $procedure$
DECLARE
    v_as_of timestamptz := coalesce(as_of, pg_catalog.now());
    v_result record;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'invalid batch_size %: expected a positive number', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        SELECT * INTO v_result FROM bench_candidate.advance_session_statuses(v_as_of, batch_size);
        COMMIT;
        EXIT WHEN v_result.opened + v_result.completed < batch_size;
    END LOOP;
END
$procedure$;
