"""Chainhook webhook bodies (v1 and 2.0) into deliveries of event rows. Pure: bytes and models in,
rows out; the store writes them."""
