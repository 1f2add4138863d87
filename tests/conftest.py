"""Shared test configuration: fixtures of kubesim and of the daemon are loaded as plugins."""
