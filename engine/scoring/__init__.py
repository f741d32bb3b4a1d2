"""The lead-scoring toolkit: score models (bands, decay, roll-ups) and grade models."""
