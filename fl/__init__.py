"""fl: a federated-learning simulator on Flower with virtual time."""
