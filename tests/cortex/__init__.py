"""Tests of the CortEX codecs."""
