# examples/openai_sdk.py: the official openai SDK against kombain (run it from the checkout).
import os
import tempfile

from openai import OpenAI

server = os.environ.get("KOMBAIN_URL", "http://127.0.0.1:8000")
client = OpenAI(base_url=server + "/v1", api_key="unused")  # a key only if the server has KOMBAIN_API_KEYS

with open("tests/data/speech/arctic_a0009.wav", "rb") as audio:
    print(client.audio.transcriptions.create(model="whisper-1", file=audio).text)

speech = os.path.join(tempfile.gettempdir(), "kombain-hello.mp3")
with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello from kombain.") as response:
    response.stream_to_file(speech)
print("spoken answer in", speech)
