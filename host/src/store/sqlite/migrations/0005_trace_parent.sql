-- The W3C traceparent of a message's accept, when traces are exported:
-- its turn and its deliveries, whenever and wherever they run, are spans
-- of the same trace.
ALTER TABLE messages ADD COLUMN trace_parent TEXT;
