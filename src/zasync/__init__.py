"""zasync: durable background jobs for ZODB applications."""
