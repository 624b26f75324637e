"""writer: readings and alarm events from Kafka into the time-series store, batched."""
