"""Planner rules: each a pure function over the sqlglot tree, composed in order."""
