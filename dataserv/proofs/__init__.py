"""Proof of space: plots bound to a farmer, challenges, proof verification, scores."""
