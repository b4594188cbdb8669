"""The hub: the market and the relay between requestors and providers."""
