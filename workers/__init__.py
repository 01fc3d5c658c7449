"""Model workers: consume crops or eye windows from Redis and write scores."""
