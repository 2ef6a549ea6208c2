"""Using trained weights: load them, generate, score a text, export them."""
