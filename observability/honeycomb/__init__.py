"""Honeycomb: a board of raftd's queries (board.json) and the script that creates it."""
