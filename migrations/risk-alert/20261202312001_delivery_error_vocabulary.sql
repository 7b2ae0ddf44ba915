-- Delivery errors are reported in a fixed vocabulary ("destination refused by policy",
-- "could not connect", "timed out", "HTTP <status>", "delivery failed"; see
-- services/risk-alert/src/delivery/failure.rs). Earlier versions stored "timeout",
-- "connection failed" and "request failed", which told an absent host, a closed port and
-- a slow receiver apart for any URL an office registered, and "HTTP 503 Service
-- Unavailable". The status code is kept; the rest becomes "delivery failed", since which
-- it was cannot be told now.
UPDATE delivery_attempts
SET error = CASE WHEN error ~ '^HTTP [0-9]{3}' THEN substring(error FROM '^HTTP [0-9]{3}') ELSE 'delivery failed' END
WHERE error <> ''
  AND error !~ '^HTTP [0-9]{3}$'
  AND error NOT IN ('destination refused by policy', 'could not connect', 'timed out', 'delivery failed');

UPDATE notifications
SET last_error = CASE WHEN last_error ~ '^HTTP [0-9]{3}' THEN substring(last_error FROM '^HTTP [0-9]{3}') ELSE 'delivery failed' END
WHERE last_error <> ''
  AND last_error !~ '^HTTP [0-9]{3}$'
  AND last_error NOT IN ('destination refused by policy', 'could not connect', 'timed out', 'delivery failed');
