-- The user whose turn last wrote a session's context: erasing a user
-- empties the contexts they wrote, also once their messages are gone.
ALTER TABLE sessions ADD COLUMN user_id TEXT;
