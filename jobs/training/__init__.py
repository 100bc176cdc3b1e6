"""Training the models Vigil scores with (jobs/train_autoencoder.py is the command line)."""
