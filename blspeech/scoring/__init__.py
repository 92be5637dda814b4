"""Scoring: sclite-exact WER, Hub5 (hubscr) scoring, NIST's MAPSSWE significance test."""
