-- Credited vs claimed height, and registrations counted per network.
--
-- height is now the CREDITED height as of height_at; claimed_height is the farmer's
-- last claim. Between claims the credited height grows toward the claim at the
-- fill rate; credited_height() below says by how much, and every reader (the
-- summary, a farmer's status, set_height) goes through it. Existing farmers are
-- credited with what they claimed.
ALTER TABLE farmers
    ADD COLUMN claimed_height bigint NOT NULL DEFAULT 0,
    ADD COLUMN height_at double precision NOT NULL DEFAULT 0,
    -- The network (/24 for IPv4, /64 for IPv6) a farmer registered from, never
    -- published; NULL for farmers registered before this migration.
    ADD COLUMN reg_network text;

UPDATE farmers SET claimed_height = height, height_at = reg_time;

-- "Registrations from this network in the last hour" is a range scan on this index.
CREATE INDEX farmers_reg_network ON farmers (reg_network, reg_time)
    WHERE reg_network IS NOT NULL;

-- THE CREDITED-HEIGHT RULE (dataserv.registry.credit names it on the Python side).
-- p_height was credited at p_height_at; the farmer claims p_claimed. At p_now the
-- credited height is the claim, but no more than p_height plus what a disk filling
-- at p_rate shards per second could have added since p_height_at. A NULL rate
-- (--max-fill-rate 0, --no-limits) credits the claim as it is. LANGUAGE sql and
-- IMMUTABLE so the planner inlines it: no function call per row in the summary.
CREATE FUNCTION credited_height(p_height bigint, p_height_at double precision,
                                p_claimed bigint, p_rate double precision,
                                p_now double precision)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_rate IS NULL THEN p_claimed
                ELSE least(p_claimed::double precision,
                           p_height + floor(p_rate * greatest(0, p_now - p_height_at)))::bigint
           END
$$;

-- A height claim. What credited_height() allows now is credited; if that is the
-- whole claim (always the case for a claim at or below the credited height: a
-- farmer that deleted data drops at once) the credit is re-anchored at p_at, else
-- the anchor stays, so the credited height keeps growing along the same line (no
-- fraction of a shard is lost to rounding) until it reaches the claim. Records a
-- (never throttled) contact; returns whether the farmer exists. The old
-- five-argument set_height credited every claim as it was: it goes.
DROP FUNCTION set_height(text, bigint, double precision, text, double precision);

CREATE FUNCTION set_height(p_addr text, p_height bigint, p_at double precision,
                           p_ip text, p_window double precision,
                           p_rate double precision)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE farmers f
    SET height = CASE WHEN credited_height(f.height, f.height_at, p_height, p_rate, p_at)
                           = p_height THEN p_height ELSE f.height END,
        height_at = CASE WHEN credited_height(f.height, f.height_at, p_height, p_rate, p_at)
                              = p_height THEN p_at ELSE f.height_at END,
        claimed_height = p_height
    WHERE f.btc_addr = p_addr;
    RETURN (SELECT count(*) > 0 FROM record_contacts(ARRAY[p_addr], ARRAY[p_at], ARRAY[p_ip],
                                                      '-Infinity', p_window));
END
$$;

-- Register a farmer in one round trip, counting p_network's registrations. Returns
-- no row when the address is taken; one row with only retry_at (when a slot
-- frees) when p_network already has p_limit registrations in the last p_period
-- seconds, unless the address is taken (a farmer registering again gets its 409,
-- never a 429); else the new farmer's row. The per-network advisory lock makes
-- concurrent registrations from one network (on any daemon) count one after the
-- other; each statement of a PL/pgSQL function sees what committed before it, so
-- the count after the lock sees the registration that held it. (Without a limit
-- dataserv.storage.store inserts with a plain INSERT.)
CREATE FUNCTION register_farmer(p_addr text, p_payout text, p_at double precision,
                                p_ip text, p_network text, p_limit integer,
                                p_period double precision)
RETURNS TABLE (retry_at double precision, id bigint, btc_addr text, payout_addr text,
               height bigint, reg_time double precision, last_seen double precision,
               bandwidth_upload double precision, bandwidth_download double precision,
               claimed_height bigint, height_at double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_oldest double precision;
BEGIN
    IF p_limit IS NOT NULL AND p_network IS NOT NULL THEN
        -- 1684370546 = "dera": any constant, the same in every dataserv.
        PERFORM pg_advisory_xact_lock(1684370546, hashtext(p_network));
        -- The p_limit-th newest registration in the window: once it is older than
        -- the window, fewer than p_limit are left in it.
        SELECT f.reg_time INTO v_oldest FROM farmers f
        WHERE f.reg_network = p_network AND f.reg_time > p_at - p_period
        ORDER BY f.reg_time DESC OFFSET p_limit - 1 LIMIT 1;
        IF FOUND THEN
            IF EXISTS (SELECT 1 FROM farmers f WHERE f.btc_addr = p_addr) THEN
                RETURN;  -- registered already: 409, as it would be without the limit
            END IF;
            RETURN QUERY SELECT v_oldest + p_period, NULL::bigint, NULL::text, NULL::text,
                                NULL::bigint, NULL::double precision, NULL::double precision,
                                NULL::double precision, NULL::double precision,
                                NULL::bigint, NULL::double precision;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY
        INSERT INTO farmers AS f (btc_addr, payout_addr, reg_time, last_seen, last_ip,
                                  height_at, reg_network)
        VALUES (p_addr, p_payout, p_at, p_at, p_ip, p_at, p_network)
        ON CONFLICT (btc_addr) DO NOTHING
        RETURNING NULL::double precision, f.id, f.btc_addr, f.payout_addr, f.height,
                  f.reg_time, f.last_seen, f.bandwidth_upload, f.bandwidth_download,
                  f.claimed_height, f.height_at;
END
$$;
