"""Fixtures of the SQL tests (tests/sql/models.py: the models they score with)."""
from tests.sql.models import point_models, window_model  # noqa: F401 - the fixtures
