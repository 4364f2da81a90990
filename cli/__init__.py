"""raftctl and its client library (redirects, retries with one session id, deadlines)."""
