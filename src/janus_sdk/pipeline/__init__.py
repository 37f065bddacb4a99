"""The pipeline: components owned by one object, the decoding loops, and the model container."""
