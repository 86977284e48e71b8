"""The four loraplex gRPC services and the kit they share."""
