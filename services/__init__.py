"""Lifeline's services: ingest, processor, writer, the local stack and the CLI."""
