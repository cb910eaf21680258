"""The whitevec HTTP service, its settings, jobs and command line."""
