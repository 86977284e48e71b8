"""Demo content: the Acme Robotics handbook, its instruction data and held-out questions."""
