-- Dead letters, counted per endpoint each time the metrics are scraped:
-- few rows, among all the outputs kept for the admin API.
CREATE INDEX outputs_dead ON outputs (endpoint) WHERE status = 'dead';
