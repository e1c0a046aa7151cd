-- Each output's place among its message's outputs, in the order the flow
-- said them. An output said while its turn still runs is committed by
-- itself; when the turn runs again (after a crash or a restart), the
-- outputs its first run committed are neither stored nor sent twice. Rows
-- from before this step have none (NULLs are distinct in a unique index).
ALTER TABLE outputs ADD COLUMN position INTEGER;
CREATE UNIQUE INDEX outputs_message_position ON outputs (message_id, position);
