"""The whitevec service: http/ (the API), engine/ (what owns state) and cli/ (the command line)."""
