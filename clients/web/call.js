// The call page: microphone -> WebRTC (Opus) -> kombain; events on the "oai-events" data channel.
// Standard APIs only (Chromium and Firefox). window.kombainStats() and window.kombainTurns() are
// for tests and debugging.
import { formatTiming, serverTimings, TurnTimer } from "./latency.js";
import { Levels } from "./levels.js";
import { SettingsForm } from "./settings.js";
import { Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const ui = {
  call: $("call"), hangup: $("hangup"), status: $("status"), rtt: $("rtt"), level: $("level"),
  speaking: $("speaking"), error: $("error"), remote: $("remote"), key: $("api-key"),
  lastHeard: $("last-heard"), say: $("say"), text: $("text"), send: $("send"),
};
const transcript = new Transcript($("transcript"), $("hint"));
const settings = new SettingsForm();

let current = null; // the live call, or null
let typedCount = 0;

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function authHeaders() {
  const key = ui.key.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// fetch, with a network failure said plainly (the browser only says "Failed to fetch").
async function request(path, init = {}) {
  try {
    return await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers ?? {}) } });
  } catch (err) {
    throw new Error(`cannot reach the server at ${location.origin} (${err.message}): is kombain running?`);
  }
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    return body.error?.message ?? `HTTP ${resp.status}`;
  } catch {
    return `HTTP ${resp.status}`;
  }
}

// What the server offers: its voices and the responders a call may ask for.
async function loadChoices() {
  try {
    const [voices, config] = await Promise.all([request("/v1/audio/voices"), request("/v1/realtime/calls/config")]);
    if (voices.ok) settings.setVoices((await voices.json()).data ?? []);
    if (config.ok) {
      const body = await config.json();
      if (body.responders) settings.setResponders(body.responders, body.responder);
    } else if (config.status === 401) {
      showError("This server needs an API key: enter it under Settings, then press Call.");
    }
  } catch (err) {
    showError(`The page cannot load its settings: ${err.message}`);
  }
}

// Resolve once ICE gathering is complete (the server does not take trickled candidates).
function gatheringComplete(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

function microphoneError(err) {
  switch (err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "The microphone was refused. Allow it for this page (the icon in the address bar), then press Call again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone found. Plug one in (or pick one in the browser's settings), then press Call again.";
    case "NotReadableError":
      return "The microphone is busy or failed: another program may be using it.";
    default:
      return `The microphone could not be opened: ${err.message ?? err}`;
  }
}

async function pollStats(pc) {
  const stats = await pc.getStats();
  let rtt = null;
  let inbound = null;
  let outbound = null;
  stats.forEach((s) => {
    if (s.type === "candidate-pair" && (s.nominated || s.state === "succeeded") && s.currentRoundTripTime !== undefined) {
      rtt = s.currentRoundTripTime;
    } else if (s.type === "inbound-rtp" && s.kind === "audio") {
      inbound = { bytesReceived: s.bytesReceived, packetsReceived: s.packetsReceived,
                  totalAudioEnergy: s.totalAudioEnergy ?? null, audioLevel: s.audioLevel ?? null };
    } else if (s.type === "outbound-rtp" && s.kind === "audio") {
      outbound = { bytesSent: s.bytesSent, packetsSent: s.packetsSent };
    }
  });
  return { rtt, inbound, outbound };
}

function send(call, event) {
  if (call?.dc?.readyState !== "open") return false;
  call.dc.send(JSON.stringify(event));
  return true;
}

function showTurn(turn) {
  if (!turn?.responseId) return;
  transcript.timing(turn.responseId, formatTiming(turn), serverTimings(turn));
  if (typeof turn.heardMs === "number") ui.lastHeard.textContent = `${Math.round(turn.heardMs)} ms`;
}

function onLevels(call, mic, reply, t) {
  call.timer.micLevel(mic, t);
  const turn = call.timer.replyLevel(reply, t);
  if (turn) showTurn(turn);
  if (t - call.meterShownAt >= 50) { // the meter needs no more than 20 updates a second
    call.meterShownAt = t;
    ui.level.value = Math.min(1, mic * 4);
    ui.level.textContent = ui.level.value.toFixed(2);
  }
}

async function startCall() {
  showError("");
  ui.call.disabled = true;
  setStatus("asking for the microphone…");
  const call = { pc: null, dc: null, stream: null, levels: null, timer: new TurnTimer(), stats: 0,
                 location: null, events: 0, meterShownAt: 0 };
  current = call;
  try {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("This browser gives the microphone only to secure pages: open the page as "
                      + "http://localhost:PORT/ on this machine, or over HTTPS from another.");
    }
    try {
      call.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      throw new Error(microphoneError(err));
    }
    call.levels = new Levels((mic, reply, t) => onLevels(call, mic, reply, t));
    call.levels.setMicrophone(call.stream);
    setStatus("connecting…");
    const config = await request("/v1/realtime/calls/config");
    if (!config.ok) throw new Error(await errorText(config));
    const { ice_servers: iceServers, data_channel: label } = await config.json();

    const pc = (call.pc = new RTCPeerConnection({ iceServers }));
    for (const track of call.stream.getAudioTracks()) pc.addTrack(track, call.stream);
    pc.ontrack = (e) => {
      const stream = e.streams[0] ?? new MediaStream([e.track]);
      ui.remote.srcObject = stream;
      call.levels?.setReply(stream);
    };
    pc.onconnectionstatechange = () => {
      setStatus(pc.connectionState);
      if (pc.connectionState === "failed") {
        showError("The call's connection failed: no network path to the server's media (a firewall, or a "
                  + "server behind NAT without KOMBAIN_WEBRTC_ICE_SERVERS).");
      }
      if (["failed", "closed"].includes(pc.connectionState)) endCall(pc.connectionState);
    };
    const dc = (call.dc = pc.createDataChannel(label));
    dc.onopen = () => {
      send(call, settings.sessionUpdate()); // the form's settings, before the first turn
      ui.text.disabled = ui.send.disabled = false;
    };
    dc.onmessage = (e) => onEvent(call, JSON.parse(e.data));
    dc.onclose = () => { if (current === call) endCall("the server ended the call"); };

    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc);
    const responder = settings.responder.value;
    const resp = await request(`/v1/realtime/calls${responder ? `?responder=${encodeURIComponent(responder)}` : ""}`, {
      method: "POST", body: pc.localDescription.sdp, headers: { "Content-Type": "application/sdp" },
    });
    if (resp.status !== 201) throw new Error(await errorText(resp));
    call.location = resp.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    ui.hangup.disabled = false;
    settings.lockResponder(true);
    call.stats = setInterval(async () => {
      const { rtt } = await pollStats(pc);
      ui.rtt.textContent = rtt === null ? "–" : `${(rtt * 1000).toFixed(rtt < 0.01 ? 1 : 0)} ms`;
    }, 1000);
  } catch (err) {
    showError(`Call failed: ${err.message ?? err}`);
    endCall("failed");
  }
}

function onEvent(call, ev) {
  call.events += 1;
  const t = performance.now();
  if (transcript.handle(ev)) {
    if (ev.type === "conversation.item.input_audio_transcription.completed") {
      showTurn(call.timer.transcribed(ev.item_id, t));
    } else if (ev.type.startsWith("response.")) {
      showTurn(call.timer.byResponse.get(ev.response_id));
    }
    return;
  }
  switch (ev.type) {
    case "session.created":
      setStatus("connected, listening");
      break;
    case "session.updated":
      settings.showApplied(ev.session);
      break;
    case "input_audio_buffer.speech_started":
      ui.speaking.textContent = "speaking";
      call.timer.speechStarted(ev.item_id, t);
      break;
    case "input_audio_buffer.speech_stopped":
      ui.speaking.textContent = "silent";
      call.timer.speechStopped(ev.item_id, t);
      break;
    case "response.created":
      showTurn(call.timer.responseCreated(ev.response.id));
      break;
    case "response.done":
      showTurn(call.timer.responseDone(ev.response.id, ev.response));
      break;
    case "error":
      showError(`The server says: ${ev.error?.message ?? "error"}${ev.error?.code ? ` (${ev.error.code})` : ""}`);
      break;
    default:
  }
}

function applySettings(e) {
  e.preventDefault();
  if (!send(current, settings.sessionUpdate())) settings.applied.textContent = "applied when a call starts";
}

// A typed turn: the GA conversation item, then a request for the answer.
function sendText(e) {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !current) return;
  typedCount += 1;
  const id = `item_page_${Date.now().toString(36)}_${typedCount}`;
  send(current, {
    type: "conversation.item.create",
    item: { id, type: "message", role: "user", content: [{ type: "input_text", text }] },
  });
  send(current, { type: "response.create" });
  current.timer.typed(id, performance.now());
  transcript.typed(id, text);
  ui.text.value = "";
}

function endCall(reason) {
  const call = current;
  if (!call) return;
  current = null;
  clearInterval(call.stats);
  if (call.location) {
    fetch(call.location, { method: "DELETE", headers: authHeaders() }).catch(() => {});
  }
  call.dc?.close();
  call.pc?.close();
  call.stream?.getTracks().forEach((t) => t.stop());
  call.levels?.close();
  ui.level.value = 0;
  ui.remote.srcObject = null;
  ui.call.disabled = false;
  ui.hangup.disabled = true;
  ui.text.disabled = ui.send.disabled = true;
  settings.lockResponder(false);
  ui.speaking.textContent = "silent";
  ui.rtt.textContent = "–";
  setStatus(reason === "hangup" ? "ended" : `ended (${reason})`);
  window.kombainLastCall = call;
}

ui.call.addEventListener("click", startCall);
ui.hangup.addEventListener("click", () => endCall("hangup"));
settings.form.addEventListener("submit", applySettings);
ui.say.addEventListener("submit", sendText);
loadChoices();

// For tests and debugging: the live call's media statistics, and every turn's timings.
window.kombainStats = async () => {
  const call = current;
  if (!call?.pc) return { state: "idle" };
  return { state: call.pc.connectionState, events: call.events, ...(await pollStats(call.pc)) };
};
window.kombainTurns = () => {
  const call = current ?? window.kombainLastCall;
  return (call?.timer.turns ?? []).map((t) => ({ ...t }));
};
