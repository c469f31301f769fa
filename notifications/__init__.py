"""Telling the rest of the platform: the outbox relay to Kafka and signed webhooks."""
