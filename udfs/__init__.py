"""What runs inside Flink's Python workers: the feature set, the autoencoder and the scoring UDFs."""
