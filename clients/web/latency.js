// Per-turn timings, measured in the page (pure logic: times and levels in, numbers out).
//
//   heard       end of your speech -> the first reply audio in the page. End of speech is the last
//               moment the microphone's level was above VOICE_LEVEL before the server said the
//               turn ended (input_audio_buffer.speech_stopped); for a typed turn, the moment it was
//               sent. First audio is the first moment the reply track's level rises above
//               REPLY_LEVEL after QUIET_MS of quiet, once the turn's reply exists (response.created)
//               and no earlier reply is still being sent (the track carries silence between replies,
//               and a new reply's audio cannot come before its response.created). Both levels are
//               read from Web Audio analysers every few ms, after the browser's jitter buffer, so
//               this is close to what you hear (the sound card's own delay is not included).
//   transcript  speech_stopped -> conversation.item.input_audio_transcription.completed, both as
//               received by the page: how long the final transcript took after the turn ended.
//   synthesis   the server's own figure for text ready -> first reply audio frame
//               (response.done's kombain.timings_ms.tts): the page cannot see when text is ready.

export const VOICE_LEVEL = 0.015; // microphone RMS taken as voice
export const REPLY_LEVEL = 0.01; // reply-track RMS taken as audio (silence between replies is ~0)
export const QUIET_MS = 250; // quiet on the reply track before an onset counts (longer than a word gap)

export class TurnTimer {
  constructor() {
    this.turns = []; // every turn, oldest first
    this.lastVoice = null; // last time the microphone was above VOICE_LEVEL
    this.armed = null; // the turn waiting for its first reply audio
    this.quietSince = null; // since when the reply track has been quiet (null: it is not)
    this.active = new Set(); // replies created and not yet done
    this.byItem = new Map();
    this.byResponse = new Map();
  }

  micLevel(rms, t) {
    if (rms >= VOICE_LEVEL) this.lastVoice = t;
  }

  speechStarted(itemId, t) {
    this.byItem.set(itemId, { itemId, startedAt: t, typed: false });
  }

  // The server decided the turn is over: arm the wait for the reply's first audio.
  speechStopped(itemId, t) {
    const turn = this.byItem.get(itemId) ?? { itemId, startedAt: null, typed: false };
    turn.stoppedAt = t;
    const voiced = this.lastVoice !== null && this.lastVoice <= t
      && (turn.startedAt === null || this.lastVoice >= turn.startedAt - 2000);
    turn.endOfSpeech = voiced ? this.lastVoice : t;
    return this.#arm(turn);
  }

  typed(itemId, t) {
    return this.#arm({ itemId, typed: true, startedAt: t, stoppedAt: t, endOfSpeech: t });
  }

  #arm(turn) {
    this.byItem.set(turn.itemId, turn);
    if (!this.turns.includes(turn)) this.turns.push(turn);
    this.armed = turn;
    return turn;
  }

  transcribed(itemId, t) {
    const turn = this.byItem.get(itemId);
    if (!turn || turn.stoppedAt === undefined) return null;
    turn.transcriptMs = t - turn.stoppedAt;
    return turn;
  }

  // A reply belongs to the latest turn that has none yet.
  responseCreated(responseId) {
    this.active.add(responseId);
    const turn = [...this.turns].reverse().find((x) => x.responseId === undefined);
    if (!turn) return null;
    turn.responseId = responseId;
    this.byResponse.set(responseId, turn);
    return turn;
  }

  // Returns the turn whose first reply audio this level is, or null.
  replyLevel(rms, t) {
    const turn = this.armed;
    const ready = turn?.responseId !== undefined && [...this.active].every((id) => id === turn.responseId);
    if (rms < REPLY_LEVEL) {
      this.quietSince ??= t;
      return null;
    }
    const quiet = this.quietSince !== null && t - this.quietSince >= QUIET_MS;
    this.quietSince = null;
    if (!ready || !quiet) return null;
    this.armed = null;
    turn.firstAudioAt = t;
    turn.heardMs = t - turn.endOfSpeech;
    return turn;
  }

  responseDone(responseId, response) {
    this.active.delete(responseId);
    const turn = this.byResponse.get(responseId);
    if (!turn) return null;
    const timings = response?.kombain?.timings_ms ?? {};
    if (typeof timings.tts === "number") turn.synthesisMs = timings.tts;
    turn.serverTimings = timings;
    turn.status = response?.status;
    if (this.armed === turn && turn.status !== "completed") this.armed = null; // no audio is coming
    return turn;
  }
}

// "heard after 420 ms · transcript 3 ms · synthesis 140 ms" ("…" while waiting, "–" for none).
export function formatTiming(turn) {
  const done = turn.status !== undefined;
  const ms = (v) => (typeof v === "number" ? `${Math.round(v)} ms` : done ? "–" : "…");
  const parts = [`heard after ${ms(turn.heardMs)}`];
  if (!turn.typed) parts.push(`transcript ${ms(turn.transcriptMs)}`);
  parts.push(`synthesis ${ms(turn.synthesisMs)}`);
  return parts.join(" · ");
}

// The server's own figures for the reply (response.done kombain.timings_ms), as a tooltip.
export function serverTimings(turn) {
  const t = turn.serverTimings ?? {};
  const names = { silence_wait: "silence wait", stt: "final transcript", responder: "responder",
                  tts: "synthesis", turn: "last voiced sample to first reply audio sent" };
  const parts = Object.entries(names).filter(([k]) => typeof t[k] === "number")
    .map(([k, name]) => `${name} ${Math.round(t[k])} ms`);
  return parts.length ? `measured by the server: ${parts.join(", ")}` : "";
}
