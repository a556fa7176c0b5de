// Renders data channel events as a conversation: the caller's partial and final transcripts,
// typed messages, the bot's replies as text, and each reply's timings. Pure DOM, no network.

export class Transcript {
  constructor(list, hint) {
    this.list = list;
    this.hint = hint; // shown while the conversation is empty
    this.items = new Map(); // item or response id -> <li>
  }

  clear() {
    this.list.replaceChildren();
    this.items.clear();
    this.hint.hidden = false;
  }

  entry(id, who, label) {
    let li = this.items.get(id);
    if (!li) {
      li = document.createElement("li");
      li.className = who;
      const name = document.createElement("span");
      name.className = "who";
      name.textContent = label ?? (who === "user" ? "You" : "Bot");
      const text = document.createElement("span");
      text.className = "text";
      li.append(name, text);
      this.list.append(li);
      this.items.set(id, li);
      this.hint.hidden = true;
      li.scrollIntoView({ block: "end" });
    }
    return li;
  }

  set(id, who, text, partial) {
    const li = this.entry(id, who);
    li.querySelector(".text").textContent = text;
    li.classList.toggle("partial", partial);
  }

  append(id, who, delta) {
    const li = this.entry(id, who);
    li.querySelector(".text").textContent += delta;
    li.classList.add("partial");
  }

  typed(id, text) {
    this.entry(id, "user", "You (typed)").querySelector(".text").textContent = text;
  }

  // A line of timings under a reply (created empty if the reply has no text yet).
  timing(responseId, text, title = "") {
    const li = this.entry(responseId, "bot");
    let line = li.querySelector(".timing");
    if (!line) {
      line = document.createElement("span");
      line.className = "timing";
      line.dataset.testid = "timing";
      li.append(line);
    }
    line.textContent = text;
    line.title = title;
  }

  // Returns true when the event was a transcript event.
  handle(ev) {
    switch (ev.type) {
      case "conversation.item.input_audio_transcription.delta":
        // Deltas are the newly stable words of the partial hypothesis; the final replaces them.
        this.append(ev.item_id, "user", ev.delta);
        return true;
      case "conversation.item.input_audio_transcription.completed":
        if (ev.transcript.trim()) this.set(ev.item_id, "user", ev.transcript, false);
        else this.items.get(ev.item_id)?.remove();
        return true;
      case "response.output_audio_transcript.delta":
        this.append(ev.response_id, "bot", ev.delta);
        return true;
      case "response.output_audio_transcript.done":
        this.set(ev.response_id, "bot", ev.transcript, false);
        return true;
      default:
        return false;
    }
  }
}
