"""The same experiments on Flower's own engines: the Flower App (`fl.flower.app`: ServerApp and
ClientApp for `flwr run .`) and a launcher for Flower's Simulation and Deployment Engines
(`fl.flower.engines`)."""
