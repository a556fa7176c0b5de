"""One spoken turn over /v1/realtime with the official openai SDK (run it from the checkout).

Sends a recorded question as a microphone would (PCM16 at 24 kHz), then prints what the server
heard and answered, and saves the spoken answer as a WAV file. With the default responder (echo)
the answer repeats the question; KOMBAIN_RESPONDER=openai answers with a chat model.
"""

import asyncio
import base64
import os
import tempfile
import wave

import numpy as np
from openai import AsyncOpenAI

SERVER = os.environ.get("KOMBAIN_URL", "http://127.0.0.1:8000")
QUESTION = "tests/data/speech/goforward.wav"


def pcm16_24k(path: str) -> bytes:
    """A 16-bit mono WAV file as PCM16 at 24 kHz (linear interpolation is enough for speech)."""
    with wave.open(path) as w:
        rate, audio = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    t = np.arange(len(audio) * 24000 // rate) * rate / 24000
    return np.interp(t, np.arange(len(audio)), audio).astype(np.int16).tobytes()


async def main() -> None:
    client = AsyncOpenAI(base_url=SERVER + "/v1", api_key="unused",
                         websocket_base_url=SERVER.replace("http", "ws", 1) + "/v1")
    answer = bytearray()
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000},
                      "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
            "output": {"format": {"type": "audio/pcm", "rate": 24000}}}})
        audio = pcm16_24k(QUESTION) + bytes(48000)  # the question, then 1 s of silence: end of turn
        for i in range(0, len(audio), 4800):  # 100 ms at a time
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + 4800]).decode())
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.completed":
                print("heard:   ", event.transcript)
            elif event.type == "response.output_audio.delta":
                answer += base64.b64decode(event.delta)
            elif event.type == "response.output_audio_transcript.done":
                print("answered:", event.transcript)
            elif event.type == "error":
                raise SystemExit(f"error: {event.error.message}")
            elif event.type == "response.done":
                break
    path = os.path.join(tempfile.gettempdir(), "kombain-answer.wav")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(bytes(answer))
    print(f"spoken answer ({len(answer) / 48000:.1f} s) in {path}")


if __name__ == "__main__":
    asyncio.run(main())
