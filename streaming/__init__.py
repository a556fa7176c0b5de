"""kombain media core: frames, codecs, resampling, VAD, endpointing, streaming STT and TTS.

Nothing in here knows about HTTP or sockets: audio and events go in, audio and events come out.
"""
