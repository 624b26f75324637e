"""What every Lifeline service shares: settings, logging, topics, health, Faust wiring."""
