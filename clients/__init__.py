"""Reference clients: realtime WebSocket client and CLI."""
