-- The sessions a host holds, which it looks through on its slow timer
-- (to give up those with nothing left to do) and after it lost touch.
CREATE INDEX sessions_owner ON sessions (owner) WHERE owner IS NOT NULL;

-- A message's outputs: pruning a message looks for them.
CREATE INDEX outputs_message ON outputs (message_id);
