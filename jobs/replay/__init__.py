"""Replaying a user's CSV or Parquet file into Kafka, as a library (jobs/replay_file.py is its command line)."""
