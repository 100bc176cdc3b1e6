"""What runs: Vigil jobs (Flink jobs and the plain-Python producers that feed them)."""
