-- record_pings in one statement, and the contact rule in one place.
--
-- Before, record_pings claimed the batch's keys in one statement, marked first v2 uses
-- in a second and called record_contacts for a third: each looked the farmers up
-- again, and a batch of 8 pings cost PostgreSQL ~1.4 ms against ~0.85 ms for
-- record_contacts alone (benchmarks/RESULTS.md, "Replay refusal: what it costs").
-- Now the farmers of the batch are looked up and locked once (in id order, so
-- concurrent batches queue instead of deadlocking), the keys claimed, and the contacts
-- and first-v2 marks written by one UPDATE: ~1.0 ms.
--
-- What it decides is unchanged. An item's outcome is 'downgrade' (legacy headers from
-- a farmer with v2_since; nothing claimed), 'replayed' (its key was taken) or 'ok'
-- (claimed, or no key: authentication is off). Of the 'ok' contacts of a known farmer
-- the latest is written when it comes p_min_gap or more after the stored last_seen
-- (the ping throttle), crediting the time since that contact, up to p_window, to
-- uptime_days day by day; last_seen never moves backwards. Every 'ok' contact of a
-- known farmer reports whether it was written and the last_seen now stored; other
-- items report NULLs. An 'ok' v2 item marks an unmarked farmer.
--
-- record_contacts (height, bandwidth and audit reports are contacts too) is now
-- record_pings without keys, so the throttle and the uptime credit live here only.
CREATE OR REPLACE FUNCTION record_pings(p_addrs text[], p_ats double precision[], p_ips text[],
                             p_keys bytea[], p_v2 boolean[], p_contact boolean[],
                             p_expires double precision[], p_min_gap double precision,
                             p_window double precision)
RETURNS TABLE (item bigint, outcome text, written boolean, last_contact double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT u.* FROM unnest(p_addrs, p_ats, p_ips, p_keys, p_v2, p_contact, p_expires)
                        WITH ORDINALITY AS u(addr, at, ip, key, v2, contact, expires, i)
    ), target AS (
        SELECT f.id, f.btc_addr, f.last_seen AS previous, f.v2_since
        FROM farmers f WHERE f.btc_addr = ANY (p_addrs)
        ORDER BY f.id
        FOR UPDATE OF f
    ), checked AS (
        SELECT i.*, t.id, t.previous, t.v2_since,
               (i.key IS NOT NULL AND NOT i.v2 AND t.v2_since IS NOT NULL) AS downgrade
        FROM input i LEFT JOIN target t ON t.btc_addr = i.addr
    ), claimed AS (
        INSERT INTO request_claims (key, expires)
        SELECT c.key, c.expires FROM checked c WHERE c.key IS NOT NULL AND NOT c.downgrade
        ON CONFLICT (key) DO NOTHING
        RETURNING key
    ), decided AS (
        SELECT c.*, CASE WHEN c.key IS NULL THEN 'ok'
                         WHEN c.downgrade THEN 'downgrade'
                         WHEN c.key IN (SELECT k.key FROM claimed k) THEN 'ok'
                         ELSE 'replayed' END AS outcome
        FROM checked c
    ), latest AS (
        SELECT DISTINCT ON (d.id) d.id, d.previous, d.at, d.ip
        FROM decided d
        WHERE d.id IS NOT NULL AND d.contact AND d.outcome = 'ok'
        ORDER BY d.id, d.at DESC
    ), marks AS (
        SELECT d.id, min(d.at) AS v2_at
        FROM decided d
        WHERE d.id IS NOT NULL AND d.v2 AND d.v2_since IS NULL AND d.outcome = 'ok'
        GROUP BY d.id
    ), changes AS (
        SELECT coalesce(l.id, m.id) AS id, l.previous, l.at, l.ip, m.v2_at,
               coalesce(l.at >= l.previous + p_min_gap, false) AS moves
        FROM latest l FULL JOIN marks m ON m.id = l.id
    ), moved AS (
        UPDATE farmers f
        SET last_seen = CASE WHEN c.moves THEN greatest(c.previous, c.at) ELSE f.last_seen END,
            last_ip = CASE WHEN c.moves THEN coalesce(c.ip, f.last_ip) ELSE f.last_ip END,
            v2_since = coalesce(f.v2_since, c.v2_at)
        FROM changes c
        WHERE f.id = c.id AND (c.moves OR c.v2_at IS NOT NULL)
        RETURNING f.id, c.moves, c.previous AS since,
                  greatest(0, least(c.at - c.previous, p_window)) AS covered
    ), pieces AS (
        SELECT m.id, g.day::date AS day,
               least(m.since + m.covered, extract(epoch FROM g.day + interval '1 day'))
               - greatest(m.since, extract(epoch FROM g.day)) AS seconds
        FROM moved m,
             LATERAL generate_series(
                 date_trunc('day', to_timestamp(m.since) AT TIME ZONE 'UTC'),
                 date_trunc('day', to_timestamp(m.since + m.covered) AT TIME ZONE 'UTC'),
                 interval '1 day') AS g(day)
        WHERE m.moves AND m.covered > 0
    ), credited AS (
        INSERT INTO uptime_days AS u (farmer_id, day, online_seconds)
        SELECT id, day, seconds FROM pieces WHERE seconds > 0
        ON CONFLICT (farmer_id, day)
        DO UPDATE SET online_seconds = u.online_seconds + excluded.online_seconds
    )
    SELECT d.i, d.outcome,
           CASE WHEN l.id IS NOT NULL AND d.contact THEN m.id IS NOT NULL END,
           CASE WHEN l.id IS NOT NULL AND d.contact
                THEN CASE WHEN m.id IS NULL THEN l.previous ELSE greatest(l.previous, l.at) END
           END
    FROM decided d
    LEFT JOIN latest l ON l.id = d.id AND d.outcome = 'ok'
    LEFT JOIN moved m ON m.id = d.id AND m.moves;
END
$$;
ALTER FUNCTION record_pings(text[], double precision[], text[], bytea[], boolean[],
                            boolean[], double precision[], double precision,
                            double precision)
    SET plan_cache_mode = force_generic_plan;

DROP FUNCTION record_contacts(text[], double precision[], text[], double precision,
                              double precision);

CREATE FUNCTION record_contacts(p_addrs text[], p_ats double precision[], p_ips text[],
                                p_min_gap double precision, p_window double precision)
RETURNS TABLE (btc_addr text, written boolean, last_contact double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := coalesce(cardinality(p_addrs), 0);
BEGIN
    RETURN QUERY
        SELECT DISTINCT ON (p_addrs[r.item]) p_addrs[r.item], r.written, r.last_contact
        FROM record_pings(p_addrs, p_ats, p_ips, array_fill(NULL::bytea, ARRAY[n]),
                          array_fill(false, ARRAY[n]), array_fill(true, ARRAY[n]),
                          array_fill(NULL::double precision, ARRAY[n]),
                          p_min_gap, p_window) AS r
        WHERE r.written IS NOT NULL;
END
$$;

ALTER FUNCTION record_contacts(text[], double precision[], text[], double precision,
                               double precision)
    SET plan_cache_mode = force_generic_plan;
