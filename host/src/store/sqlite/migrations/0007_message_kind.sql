-- What a message asks for: 'user' (the flow runs it), 'inject' (the flow
-- runs it, told it was injected), 'notify' (its text and data are sent as
-- the bot's output, without running the flow) or 'reset' (the session's
-- context is emptied).
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';
