"""The Wendelin-style data platform: ingestion policies, ingest, durable data streams."""
