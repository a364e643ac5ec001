"""Selfment: library of pure functions (features -> NCut -> IPO -> head -> metrics)."""
