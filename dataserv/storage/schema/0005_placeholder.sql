-- Placeholder: keeps the numbering without gaps on this branch (the lead drops it at merge).
-- A statement, because the migration runner cannot execute an empty query.
SELECT 1;
