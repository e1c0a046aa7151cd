-- A message's outputs, found by their message: for a REST request waiting
-- on its turn, and for erasing a user. Message ids only grow, so an insert
-- lands at the index's end.
CREATE INDEX outputs_message ON outputs (message_id);
