"""Tiling, token counting and greedy packing of samples into InternVL 2.5 style packed sequences."""
