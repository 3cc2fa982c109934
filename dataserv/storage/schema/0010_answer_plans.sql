-- The two statements of an answer request, planned once per connection instead of
-- on every request (as 0002 did for pings). Sent as plain statements, PostgreSQL
-- planned the look-up afresh each time: ~440 us of its CPU to plan, ~250 us to run,
-- for an answer of 32 challenges; the write ~110 us to plan, ~320 us to run.

-- Claim the request (claim_request), then find the challenges an answer names as
-- (plot id, challenge) among the farmer's plots. Always at least one row: the
-- claim's outcome and the farmer's row id (NULL for an unknown farmer) in every
-- row, then the challenge found (NULLs when none was, or the claim was refused:
-- then nothing is looked up). The plan is made once, without the arrays' sizes, so
-- its shape is fixed here: each pair is looked up by index (the plot by its unique
-- id, the challenge by (plot, challenge)); OFFSET 0 keeps the planner from joining
-- the tables as wholes instead (it chose to read all of a farmer's plots).
CREATE FUNCTION answer_targets(p_addr text, p_key bytea, p_v2 boolean,
                               p_at double precision, p_expires double precision,
                               p_plots bytea[], p_challenges bytea[])
RETURNS TABLE (o_claim text, o_farmer bigint, o_row bigint, o_plot bytea, o_k smallint,
               o_challenge bytea, o_fetched double precision, o_answered double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_claim text := claim_request(p_addr, p_key, p_v2, p_at, p_expires);
    v_farmer bigint;
BEGIN
    SELECT f.id INTO v_farmer FROM farmers f WHERE f.btc_addr = p_addr;
    IF v_claim = 'ok' AND v_farmer IS NOT NULL THEN
        RETURN QUERY
            SELECT v_claim, v_farmer, c.id, p.plot_id, p.k, c.challenge, c.fetched_at,
                   c.answered_at
            FROM unnest(p_plots, p_challenges) AS a(plot_id, challenge)
            CROSS JOIN LATERAL (SELECT pl.id, pl.plot_id, pl.k FROM plots pl
                                WHERE pl.plot_id = a.plot_id AND pl.farmer_id = v_farmer
                                OFFSET 0) p
            CROSS JOIN LATERAL (SELECT ch.id, ch.challenge, ch.fetched_at, ch.answered_at
                                FROM challenges ch
                                WHERE ch.plot = p.id AND ch.challenge = a.challenge
                                OFFSET 0) c;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT v_claim, v_farmer, NULL::bigint, NULL::bytea, NULL::smallint,
                        NULL::bytea, NULL::double precision, NULL::double precision;
END
$$;
ALTER FUNCTION answer_targets(text, bytea, boolean, double precision, double precision,
                              bytea[], bytea[])
    SET plan_cache_mode = force_generic_plan;

-- Write (challenge row, valid proofs) for the challenges not answered yet whose
-- window, from the first fetch, is still open at p_now; returns the rows written.
CREATE FUNCTION record_answers(p_now double precision, p_window double precision,
                               p_rows bigint[], p_proofs integer[])
RETURNS TABLE (o_row bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
        UPDATE challenges c SET answered_at = p_now, proofs = u.n
        FROM unnest(p_rows, p_proofs) AS u(id, n)
        WHERE c.id = u.id AND c.answered_at IS NULL AND c.fetched_at IS NOT NULL
          AND p_now <= c.fetched_at + p_window
        RETURNING c.id;
END
$$;
ALTER FUNCTION record_answers(double precision, double precision, bigint[], integer[])
    SET plan_cache_mode = force_generic_plan;
