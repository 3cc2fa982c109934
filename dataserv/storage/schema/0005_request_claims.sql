-- Each authenticated request is accepted once, across every daemon on this database,
-- and a farmer that has used request-bound (v2) auth can no longer use legacy headers.
--
-- request_claims holds the replay key (16 bytes, see dataserv/identity/replay.py) of
-- every authenticated request accepted in the last 2 x --auth-timeout seconds; the
-- key is inserted in the same statement as the request's own write, so the write and
-- the claim commit or roll back together, and of two daemons racing with one captured
-- request exactly one wins (the second INSERT waits for the first and then conflicts).
-- Rows past "expires" can no longer pass the Date check and are deleted by the
-- summariser's history step (FarmerStore.prune_request_claims).
CREATE TABLE request_claims (
    key     bytea PRIMARY KEY,
    expires double precision NOT NULL
);

-- When the farmer first authenticated with v2; from then on legacy headers are refused.
ALTER TABLE farmers ADD COLUMN v2_since double precision;

-- Claim one request: 'downgrade' (legacy headers from a farmer that uses v2; nothing
-- is claimed), 'replayed' (the key is taken) or 'ok' (claimed; a v2 request marks the
-- farmer). A NULL key (authentication is switched off) is always 'ok'.
CREATE FUNCTION claim_request(p_addr text, p_key bytea, p_v2 boolean, p_at double precision,
                              p_expires double precision)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF p_key IS NULL THEN
        RETURN 'ok';
    END IF;
    IF NOT p_v2 AND EXISTS (SELECT 1 FROM farmers
                            WHERE btc_addr = p_addr AND v2_since IS NOT NULL) THEN
        RETURN 'downgrade';
    END IF;
    INSERT INTO request_claims (key, expires) VALUES (p_key, p_expires)
    ON CONFLICT (key) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'replayed';
    END IF;
    IF p_v2 THEN
        UPDATE farmers SET v2_since = p_at WHERE btc_addr = p_addr AND v2_since IS NULL;
    END IF;
    RETURN 'ok';
END
$$;

-- A batch of pings (the group commit): claim every key, then record the contacts of
-- the claimed items that are contacts. Items that are not contacts (pings this daemon
-- throttles in memory) only claim their key: a throttled ping writes no contact, but
-- its exact repeat on another daemon must still be refused. Returns one row per item
-- (1-based position): its outcome, and for contacts of known farmers whether the
-- contact was written and the farmer's last_seen as now stored (NULL for an unknown
-- farmer or an item that is not a contact).
CREATE FUNCTION record_pings(p_addrs text[], p_ats double precision[], p_ips text[],
                             p_keys bytea[], p_v2 boolean[], p_contact boolean[],
                             p_expires double precision[], p_min_gap double precision,
                             p_window double precision)
RETURNS TABLE (item bigint, outcome text, written boolean, last_contact double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_outcomes text[];
    v_mark boolean;
    v_addrs text[];
    v_ats double precision[];
    v_ips text[];
BEGIN
    -- One statement claims every key and picks the contacts to record.
    WITH input AS (
        SELECT u.* FROM unnest(p_addrs, p_ats, p_ips, p_keys, p_v2, p_contact, p_expires)
                        WITH ORDINALITY AS u(addr, at, ip, key, v2, contact, expires, i)
    ), checked AS (
        SELECT i.*,
               (i.key IS NOT NULL AND NOT i.v2 AND f.v2_since IS NOT NULL) AS downgrade,
               (i.v2 AND f.id IS NOT NULL AND f.v2_since IS NULL) AS unmarked
        FROM input i LEFT JOIN farmers f ON f.btc_addr = i.addr
    ), claimed AS (
        INSERT INTO request_claims (key, expires)
        SELECT c.key, c.expires FROM checked c WHERE c.key IS NOT NULL AND NOT c.downgrade
        ON CONFLICT (key) DO NOTHING
        RETURNING key
    ), decided AS (
        SELECT c.*, CASE WHEN c.key IS NULL THEN 'ok'
                         WHEN c.downgrade THEN 'downgrade'
                         WHEN c.key IN (SELECT key FROM claimed) THEN 'ok'
                         ELSE 'replayed' END AS outcome
        FROM checked c
    )
    SELECT array_agg(d.outcome ORDER BY d.i), bool_or(d.unmarked),
           array_agg(d.addr) FILTER (WHERE d.contact AND d.outcome = 'ok'),
           array_agg(d.at) FILTER (WHERE d.contact AND d.outcome = 'ok'),
           array_agg(d.ip) FILTER (WHERE d.contact AND d.outcome = 'ok')
    INTO v_outcomes, v_mark, v_addrs, v_ats, v_ips FROM decided d;

    -- First v2 use marks the farmer (rare: once per farmer); rows in id order, as
    -- record_contacts takes them, so concurrent batches queue instead of deadlocking.
    IF v_mark THEN
        UPDATE farmers f SET v2_since = u.at
        FROM (SELECT DISTINCT ON (g.id) g.id, x.at
              FROM unnest(p_addrs, p_ats, p_v2) WITH ORDINALITY AS x(addr, at, v2, i)
              JOIN farmers g ON g.btc_addr = x.addr
              WHERE x.v2 AND v_outcomes[x.i] = 'ok' AND g.v2_since IS NULL
              ORDER BY g.id, x.at) u
        WHERE f.id = u.id;
    END IF;

    IF v_addrs IS NULL THEN
        RETURN QUERY SELECT x.i::bigint, v_outcomes[x.i], NULL::boolean, NULL::double precision
                     FROM generate_subscripts(p_addrs, 1) AS x(i);
        RETURN;
    END IF;
    RETURN QUERY
        WITH contacts AS (
            SELECT r.btc_addr, r.written, r.last_contact
            FROM record_contacts(v_addrs, v_ats, v_ips, p_min_gap, p_window) r
        )
        SELECT x.i, v_outcomes[x.i], c.written, c.last_contact
        FROM unnest(p_addrs, p_contact) WITH ORDINALITY AS x(addr, contact, i)
        LEFT JOIN contacts c ON c.btc_addr = x.addr AND x.contact
                                AND v_outcomes[x.i] = 'ok';
END
$$;

ALTER FUNCTION record_pings(text[], double precision[], text[], bytea[], boolean[],
                            boolean[], double precision[], double precision,
                            double precision)
    SET plan_cache_mode = force_generic_plan;
