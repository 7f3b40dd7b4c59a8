-- A retired refresh token may be presented once more within
-- REFRESH_REUSE_GRACE (a second tab) and get one sibling; the flag records
-- that it has, so the next presentation is a replay that ends the family.
ALTER TABLE refresh_tokens ADD COLUMN sibling_issued INTEGER NOT NULL DEFAULT 0
    CHECK (sibling_issued IN (0, 1));
