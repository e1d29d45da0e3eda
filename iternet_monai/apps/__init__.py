"""Applications built on the bundle."""
