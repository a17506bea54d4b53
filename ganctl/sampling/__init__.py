"""Images from a trained generator: drawn in chunks, interpolated, and by latent arithmetic."""
