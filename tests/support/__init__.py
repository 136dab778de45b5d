"""Helpers shared by the tests (servers, stacks, records, polling): no tests here."""
