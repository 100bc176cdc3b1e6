"""Flink SQL as a way into Vigil: the session (every topic a table, every model a function), its
functions' jar, and the SQL client that runs it (jobs/sql_session.py and jobs/run_sql.py wire them)."""
