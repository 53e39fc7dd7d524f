"""Repository checks that are not tests: infra linting (check_infra.py)."""
