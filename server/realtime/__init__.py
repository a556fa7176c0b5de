"""The OpenAI-Realtime-style session: protocol parsing (pure), the session, and its transports."""
