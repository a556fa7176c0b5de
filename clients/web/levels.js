// Audio levels of the microphone and of the reply track, read with Web Audio analysers.
// A timer (not requestAnimationFrame) reads them every TICK_MS, so turn timings keep their
// resolution when the page is not painted (a tab playing audio is not throttled).

const TICK_MS = 10;

function rmsOf(analyser, buf) {
  analyser.getFloatTimeDomainData(buf);
  let sum = 0;
  for (const v of buf) sum += v * v;
  return Math.sqrt(sum / buf.length);
}

export class Levels {
  // onTick(micRms, replyRms, t) is called every TICK_MS while running.
  constructor(onTick) {
    this.onTick = onTick;
    this.ctx = new AudioContext();
    this.ctx.resume().catch(() => {}); // made in a click, but some browsers start it suspended
    this.mic = null;
    this.reply = null;
    this.timer = setInterval(() => this.#tick(), TICK_MS);
  }

  #analyser(stream) {
    const analyser = this.ctx.createAnalyser();
    analyser.fftSize = 512; // ~11 ms at 48 kHz: an onset is seen within a tick or two
    this.ctx.createMediaStreamSource(stream).connect(analyser);
    return { analyser, buf: new Float32Array(analyser.fftSize) };
  }

  setMicrophone(stream) {
    this.mic = this.#analyser(stream);
  }

  setReply(stream) {
    this.reply = this.#analyser(stream);
  }

  #tick() {
    const t = performance.now();
    const mic = this.mic ? rmsOf(this.mic.analyser, this.mic.buf) : 0;
    const reply = this.reply ? rmsOf(this.reply.analyser, this.reply.buf) : 0;
    this.onTick(mic, reply, t);
  }

  close() {
    clearInterval(this.timer);
    this.ctx.close().catch(() => {});
  }
}
