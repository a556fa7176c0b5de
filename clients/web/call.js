// The call page: microphone -> WebRTC (Opus) -> kombain; events on the "oai-events" data channel.
// Standard APIs only (Chromium and Firefox). window.kombainStats() is for tests and debugging.
import { Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const ui = {
  call: $("call"), hangup: $("hangup"), status: $("status"), rtt: $("rtt"), level: $("level"),
  speaking: $("speaking"), error: $("error"), remote: $("remote"), key: $("api-key"),
};
const transcript = new Transcript($("transcript"));

let current = null; // the live call, or null

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

function startMeter(stream) {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let raf = 0;
  const tick = () => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    const rms = Math.sqrt(sum / buf.length);
    ui.level.value = Math.min(1, rms * 4);
    ui.level.textContent = ui.level.value.toFixed(2);
    raf = requestAnimationFrame(tick);
  };
  tick();
  return () => { cancelAnimationFrame(raf); ui.level.value = 0; ctx.close(); };
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

async function startCall() {
  showError("");
  ui.call.disabled = true;
  setStatus("asking for the microphone…");
  const call = { pc: null, dc: null, stream: null, stopMeter: null, timer: 0, location: null, events: 0 };
  current = call;
  try {
    call.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    call.stopMeter = startMeter(call.stream);
    const config = await fetch("/v1/realtime/calls/config", { headers: authHeaders() });
    if (!config.ok) throw new Error(await errorText(config));
    const { ice_servers: iceServers, data_channel: label } = await config.json();

    const pc = (call.pc = new RTCPeerConnection({ iceServers }));
    for (const track of call.stream.getAudioTracks()) pc.addTrack(track, call.stream);
    pc.ontrack = (e) => { ui.remote.srcObject = e.streams[0] ?? new MediaStream([e.track]); };
    pc.onconnectionstatechange = () => {
      setStatus(pc.connectionState);
      if (["failed", "closed"].includes(pc.connectionState)) endCall(pc.connectionState);
    };
    const dc = (call.dc = pc.createDataChannel(label));
    dc.onmessage = (e) => onEvent(call, JSON.parse(e.data));
    dc.onclose = () => { if (current === call) endCall("the server ended the call"); };

    setStatus("connecting…");
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc);
    const resp = await fetch("/v1/realtime/calls", {
      method: "POST", body: pc.localDescription.sdp,
      headers: { "Content-Type": "application/sdp", ...authHeaders() },
    });
    if (resp.status !== 201) throw new Error(await errorText(resp));
    call.location = resp.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    ui.hangup.disabled = false;
    call.timer = setInterval(async () => {
      const { rtt } = await pollStats(pc);
      ui.rtt.textContent = rtt === null ? "–" : `${(rtt * 1000).toFixed(rtt < 0.01 ? 1 : 0)} ms`;
    }, 1000);
  } catch (err) {
    showError(`Call failed: ${err.message ?? err}`);
    endCall("failed");
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

function onEvent(call, ev) {
  call.events += 1;
  if (transcript.handle(ev)) return;
  switch (ev.type) {
    case "session.created":
      setStatus("connected, listening");
      break;
    case "input_audio_buffer.speech_started":
      ui.speaking.textContent = "speaking";
      break;
    case "input_audio_buffer.speech_stopped":
      ui.speaking.textContent = "silent";
      break;
    case "error":
      showError(ev.error?.message ?? "error");
      break;
    default:
  }
}

function endCall(reason) {
  const call = current;
  if (!call) return;
  current = null;
  clearInterval(call.timer);
  if (call.location) {
    fetch(call.location, { method: "DELETE", headers: authHeaders() }).catch(() => {});
  }
  call.dc?.close();
  call.pc?.close();
  call.stream?.getTracks().forEach((t) => t.stop());
  call.stopMeter?.();
  ui.remote.srcObject = null;
  ui.call.disabled = false;
  ui.hangup.disabled = true;
  ui.speaking.textContent = "silent";
  ui.rtt.textContent = "–";
  setStatus(reason === "hangup" ? "ended" : `ended (${reason})`);
  window.kombainLastCall = call;
}

ui.call.addEventListener("click", startCall);
ui.hangup.addEventListener("click", () => endCall("hangup"));

// For tests and debugging: the live call's media statistics.
window.kombainStats = async () => {
  const call = current;
  if (!call?.pc) return { state: "idle" };
  return { state: call.pc.connectionState, events: call.events, ...(await pollStats(call.pc)) };
};
