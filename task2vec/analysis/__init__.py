"""What is computed from task embeddings: distances, noise correction, diversity, correlation with measured transfer, and their reports."""
