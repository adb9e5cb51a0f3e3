"""Compiled Cython extensions (sources in ext/)."""
