// The settings form: voice, turn detection, responder, instructions. Voice, turn detection and
// instructions go to the server as one GA `session.update` on the data channel (at the start of a
// call and whenever Apply is pressed); the responder is chosen when a call starts (`?responder=`).

const $ = (id) => document.getElementById(id);

export class SettingsForm {
  constructor() {
    this.form = $("settings");
    this.voice = $("voice");
    this.silence = $("silence");
    this.eagerness = $("eagerness");
    this.responder = $("responder");
    this.instructions = $("instructions");
    this.applied = $("applied");
    this.form.addEventListener("change", () => this.#showTurnFields());
    this.#showTurnFields();
  }

  get turnType() {
    return this.form.querySelector("input[name=turn]:checked")?.value ?? "server_vad";
  }

  #showTurnFields() {
    const semantic = this.turnType === "semantic_vad";
    $("silence-row").hidden = semantic;
    $("eagerness-row").hidden = !semantic;
  }

  // Fill the voice and responder lists from what the server offers.
  setVoices(voices) {
    this.voice.replaceChildren(...voices.map((v) => {
      const opt = new Option(`${v.id}${v.language ? ` (${v.language})` : ""}`, v.id, v.default, v.default);
      return opt;
    }));
  }

  setResponders(names, fallback) {
    const labels = { echo: "echo: repeats what you said", script: "script: the IVR menu", openai: "openai: a chat model" };
    this.responder.replaceChildren(...names.map((n) => new Option(labels[n] ?? n, n, n === fallback, n === fallback)));
  }

  turnDetection() {
    if (this.turnType === "semantic_vad") return { type: "semantic_vad", eagerness: this.eagerness.value };
    const ms = Math.round(Number(this.silence.value));
    return { type: "server_vad", silence_duration_ms: Number.isFinite(ms) ? ms : 500 };
  }

  // The GA session.update event for the form's values.
  sessionUpdate() {
    const output = this.voice.value ? { voice: this.voice.value } : {};
    return {
      type: "session.update",
      session: {
        type: "realtime",
        instructions: this.instructions.value,
        audio: { input: { turn_detection: this.turnDetection() }, output },
      },
    };
  }

  // What the server says the session now is (session.updated / session.created).
  showApplied(session) {
    const td = session?.audio?.input?.turn_detection;
    const voice = session?.audio?.output?.voice;
    let turn = "manual";
    if (td?.type === "semantic_vad") turn = `semantic_vad, eagerness ${td.eagerness}`;
    else if (td?.type === "server_vad") turn = `server_vad, ${td.silence_duration_ms} ms silence`;
    this.applied.textContent = `in use: ${voice ?? "default voice"}; ${turn}`;
  }

  lockResponder(locked) {
    this.responder.disabled = locked;
  }
}
