"""Repositories: all SQL lives here. They flush; the caller commits."""
