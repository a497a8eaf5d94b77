"""What every concern shares: CLI helpers, password hashes, durable files, addresses, HTTP
errors.  It imports no other kiln package, so any of them may import it."""
