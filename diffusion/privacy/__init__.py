"""What keeps a release from pointing at a patient: value protection (bounds, rounding, rare labels) and synthetic ids."""
