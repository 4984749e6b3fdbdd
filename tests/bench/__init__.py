"""Smoke tests of the benchmark suites (tiny sizes; they check shapes, never speed)."""
