"""Conway collector: OTLP/Zipkin ingest, the live call graph, ownership and diagnosis."""
