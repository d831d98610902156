"""Loopback test servers: real HTTP on 127.0.0.1 for the real openai client."""
