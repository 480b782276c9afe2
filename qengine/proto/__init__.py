"""gRPC protocol between the czar and the workers (generated modules committed)."""
