-- A user holds at most one outstanding link per purpose: a new reset or
-- verification link replaces the previous one. With user_id unique, that
-- replacement is one upsert statement instead of a transaction of DELETE
-- and INSERT (four round trips to SQLite's connection thread per link, on
-- the registration path). Replacement always ran in one transaction on the
-- single writer, so no user has two rows; the DELETE only makes sure.
DELETE FROM reset_tokens
    WHERE id NOT IN (SELECT max(id) FROM reset_tokens GROUP BY user_id);
DROP INDEX reset_tokens_user_id;
CREATE UNIQUE INDEX reset_tokens_user_id ON reset_tokens (user_id);

DELETE FROM verification_tokens
    WHERE id NOT IN (SELECT max(id) FROM verification_tokens GROUP BY user_id);
DROP INDEX verification_tokens_user_id;
CREATE UNIQUE INDEX verification_tokens_user_id ON verification_tokens (user_id);
