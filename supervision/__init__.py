"""Supervised child processes for oretrace's workers (standard library only, no oretrace
imports: crypto/, ledger/ and api/ may all use it). See `supervision.children`."""
