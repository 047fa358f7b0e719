"""order service: market buys and sells, order history and per-asset trade history."""
