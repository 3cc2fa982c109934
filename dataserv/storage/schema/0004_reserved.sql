-- Placeholder on the auth-v2 branch only: migration 0004 belongs to the limits-registry
-- change, which lands separately. Drop this file when merging that one.
SELECT 1;
