"""Predicting the impact of model expansion through the minima manifold."""
