"""notifier: routing, rotas, escalation, channels and the acknowledgement page."""
