-- How many of a message's outputs are kept, counted in the order the flow
-- said them. An output said while its turn still runs is committed by
-- itself; when the turn runs again (after a crash or a restart), the
-- outputs its first run committed are neither stored nor sent twice. A
-- counter on the message's row, which every such write touches anyway,
-- costs less than an index on the outputs.
ALTER TABLE messages ADD COLUMN outputs_kept INTEGER NOT NULL DEFAULT 0;
