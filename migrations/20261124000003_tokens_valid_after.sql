-- Access tokens issued before this instant (Unix ms) are refused: moved
-- forward by sign-out everywhere, password change and reset.
ALTER TABLE users ADD COLUMN tokens_valid_after INTEGER;
