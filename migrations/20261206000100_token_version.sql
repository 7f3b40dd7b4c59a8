-- Raised by one at every cut-off of a user's access tokens. Access tokens
-- and portal sessions carry the version they were issued under and are
-- refused once it is behind (whole-second `iat` against the cut-off's
-- instant let a token minted in the same second through).
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
