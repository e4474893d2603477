// voxpipe web page: capture from the click, so nothing said while WebRTC connects is lost.
//
// A WebRTC sender carries only what the microphone says once the connection is up (about
// 1-3 s after Start); what the speaker said before that was dropped. This script (loaded in
// the page's <head>, before FastRTC's component) puts a small audio graph between the
// microphone and FastRTC:
//
//   microphone -> AudioWorklet "voxpipe-hold" -> MediaStreamDestination -> the track FastRTC sends
//
// * Every audio getUserMedia() of the page gets the graph's track instead of the raw one.
// * From the Start click the worklet holds the microphone's audio (and sends silence);
//   when the peer connection that carries the track reports "connected", it plays what it
//   held from its first sample, then the live audio behind it.
// * While it is behind, it catches up by leaving out the excess of long pauses (each pause
//   keeps KEEP_PAUSE_S), so speech is never cut and the delay goes away at the first pauses.
// * #voxpipe-capture shows the state (data-state: idle | connecting | catching-up | live,
//   data-held: seconds held when the connection came up, data-behind: seconds behind now).
//
// Where AudioWorklet is missing (an insecure origin, an old browser), the page works as
// before, with the raw microphone track.
(() => {
  "use strict";
  if (window.__voxpipeCapture) return;
  const HOLD_MAX_S = 30; // held at most (oldest dropped beyond)
  const KEEP_PAUSE_S = 0.5; // of each pause while catching up (the VAD needs 0.3 s to see one)
  const LEAD_S = 0.2; // silence sent first after "connected", while the first packets find their way
  const START_WINDOW_MS = 15000; // a getUserMedia() this soon after Start holds from its first sample

  // log: [state, milliseconds since the Start click] each time the state changes
  const status = { state: "idle", held: 0, behind: 0, skipped: 0, log: [] };
  window.__voxpipeCapture = status;

  const WORKLET = `
  class VoxpipeHold extends AudioWorkletProcessor {
    constructor(options) {
      super();
      const o = options.processorOptions || {};
      this.holding = !!o.hold; // keep the input (from the Start click)
      this.released = false; // play what is kept
      this.blocks = []; // [Float32Array, quiet] not played yet
      this.kept = 0; // samples in blocks
      this.maxKept = ${HOLD_MAX_S} * sampleRate;
      this.keepPause = ${KEEP_PAUSE_S} * sampleRate;
      this.lead = 0;
      this.pauseRun = 0; // samples of the current pause played
      this.floor = 0.01; // noise floor estimate (rms)
      this.skipped = 0;
      this.sinceReport = 0;
      this.port.onmessage = (e) => {
        if (e.data === "hold" && !this.released) {
          this.holding = true;
          this.blocks = [];
          this.kept = 0;
        } else if (e.data === "release" && !this.released) {
          this.holding = true;
          this.released = true;
          this.lead = Math.round(${LEAD_S} * sampleRate);
          this.port.postMessage({ type: "released", held: this.kept / sampleRate });
        }
      };
    }
    quiet(x) {
      let s = 0;
      for (let i = 0; i < x.length; i++) s += x[i] * x[i];
      const rms = Math.sqrt(s / Math.max(1, x.length));
      // the floor follows the quietest blocks at once and rises slowly (about x1.2 per second)
      this.floor = Math.max(1e-5, Math.min(rms, this.floor * Math.pow(1.2, x.length / sampleRate)));
      return rms < Math.min(Math.max(3 * this.floor, 0.001), 0.02);
    }
    process(inputs, outputs) {
      const out = outputs[0][0];
      const input = inputs[0] && inputs[0][0];
      if (this.holding && input) {
        this.blocks.push([new Float32Array(input), this.quiet(input)]);
        this.kept += input.length;
        while (!this.released && this.kept > this.maxKept) this.kept -= this.blocks.shift()[0].length;
      }
      if (!this.released) {
        out.fill(0);
      } else if (this.lead > 0) {
        out.fill(0);
        this.lead -= out.length;
      } else {
        // behind: more than the block that just came in is waiting; skip the excess of a pause
        while (this.blocks.length > 1 && this.blocks[0][1] && this.pauseRun >= this.keepPause) {
          this.kept -= this.blocks.shift()[0].length;
          this.skipped += 1;
        }
        const next = this.blocks.shift();
        if (next) {
          this.kept -= next[0].length;
          this.pauseRun = next[1] ? this.pauseRun + next[0].length : 0;
          out.set(next[0].subarray(0, out.length));
        } else {
          out.fill(0);
        }
      }
      for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
      this.sinceReport += out.length;
      if (this.sinceReport >= sampleRate / 10) {
        this.sinceReport = 0;
        this.port.postMessage({ type: "status", behind: Math.max(0, this.kept - out.length) / sampleRate,
                                kept: this.kept / sampleRate, skipped: this.skipped, released: this.released });
      }
      return true;
    }
  }
  registerProcessor("voxpipe-hold", VoxpipeHold);
  `;
  let moduleUrl = null;
  const graphs = []; // every graph made, newest last
  const byTrack = new WeakMap(); // the track handed to FastRTC -> its graph
  let startClicked = 0;

  function draw() {
    const el = document.getElementById("voxpipe-capture");
    if (document.body) document.body.dataset.vpCapture = status.state;
    if (!el) return;
    el.dataset.state = status.state;
    el.dataset.held = status.held.toFixed(2);
    el.dataset.behind = status.behind.toFixed(2);
    let text = "";
    if (status.state === "connecting") {
      text = `connecting… your speech is recorded from the click (${status.behind.toFixed(1)} s so far)`;
    } else if (status.state === "catching-up") {
      text = `connected: sending what was said while connecting (${status.behind.toFixed(1)} s behind)`;
    } else if (status.state === "live") {
      text = status.held > 0 ? `connected: the ${status.held.toFixed(1)} s said while connecting were sent`
        : "connected";
    }
    el.innerHTML = text ? `<span class="vp-pill ${status.state === "live" ? "on" : ""}">${text}</span>` : "";
  }

  function setState(state) {
    if (state !== status.state) status.log.push([state, Date.now() - startClicked]);
    status.state = state;
    draw();
  }

  function close(g) {
    if (g.closed) return;
    g.closed = true;
    for (const t of g.real.getTracks()) t.stop();
    g.ctx.close().catch(() => {});
    const i = graphs.indexOf(g);
    if (i >= 0) graphs.splice(i, 1);
    if (g.used && !graphs.some((o) => o.used)) setState("idle");
  }

  function onWorklet(g, msg) {
    if (g.closed || !(g.used || g.hold)) return;
    if (msg.type === "released") {
      status.held = msg.held;
      status.behind = msg.held;
      setState(msg.held > 0.05 ? "catching-up" : "live");
    } else if (msg.type === "status") {
      status.behind = msg.released ? msg.behind : msg.kept;
      status.skipped = msg.skipped;
      if (msg.released && status.state === "catching-up" && msg.behind < 0.05) setState("live");
      else draw();
    }
  }

  function release(g) {
    if (!g.released) {
      g.released = true;
      g.node.port.postMessage("release");
    }
  }

  async function wrap(real) {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC || !window.AudioWorkletNode) return real;
    const ctx = new AC();
    if (!moduleUrl) moduleUrl = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
    await ctx.audioWorklet.addModule(moduleUrl);
    const hold = Date.now() - startClicked < START_WINDOW_MS;
    const node = new AudioWorkletNode(ctx, "voxpipe-hold", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1,
      channelCountMode: "explicit", processorOptions: { hold },
    });
    const dest = ctx.createMediaStreamDestination();
    dest.channelCount = 1;
    ctx.createMediaStreamSource(real).connect(node).connect(dest);
    if (ctx.state !== "running") ctx.resume().catch(() => {});
    const track = dest.stream.getAudioTracks()[0];
    const realTrack = real.getAudioTracks()[0];
    const g = { ctx, node, real, track, used: false, released: false, closed: false, hold,
                device: realTrack && realTrack.getSettings ? realTrack.getSettings().deviceId : undefined };
    node.port.onmessage = (e) => onWorklet(g, e.data);
    // FastRTC reads the device of the track it got, to select it in its menu
    track.getSettings = () => (realTrack ? realTrack.getSettings() : {});
    track.getConstraints = () => (realTrack ? realTrack.getConstraints() : {});
    const stopTrack = track.stop.bind(track);
    track.stop = () => {
      stopTrack();
      close(g);
    };
    byTrack.set(track, g);
    // a graph nobody sends is the page's earlier preview: only the newest is kept
    for (const old of graphs.slice()) if (!old.used) close(old);
    graphs.push(g);
    return new MediaStream([track]);
  }

  // The graph that has held the microphone since the Start click, if FastRTC now asks for
  // that same microphone: it gets the graph's track, so the audio starts at the click.
  function heldSinceClick(constraints) {
    const g = graphs[graphs.length - 1];
    if (!g || g.used || g.closed || !g.hold || Date.now() - startClicked > START_WINDOW_MS) return null;
    if (g.real.getAudioTracks().some((t) => t.readyState !== "live")) return null;
    const want = typeof constraints.audio === "object" ? constraints.audio.deviceId : undefined;
    const id = want && typeof want === "object" ? want.exact || want.ideal : want;
    if (typeof id === "string" && g.device && id !== g.device) return null;
    return g;
  }

  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = async (constraints) => {
      if (constraints && constraints.audio && !constraints.video) {
        const held = heldSinceClick(constraints);
        if (held) return new MediaStream([held.track]);
      }
      const real = await original(constraints);
      if (!constraints || !constraints.audio || constraints.video) return real;
      try {
        return await wrap(real);
      } catch (err) {
        console.warn("voxpipe: capture from the click unavailable, sending the microphone as it is", err);
        return real;
      }
    };
  }

  const OriginalPC = window.RTCPeerConnection;
  if (OriginalPC) {
    class VoxpipePeerConnection extends OriginalPC {
      constructor(...args) {
        super(...args);
        this.voxpipeGraphs = [];
        this.addEventListener("connectionstatechange", () => {
          if (this.connectionState === "connected") this.voxpipeGraphs.forEach(release);
          if (["failed", "closed"].includes(this.connectionState) && status.state === "connecting") setState("idle");
        });
      }
      addTrack(track, ...streams) {
        const g = byTrack.get(track);
        if (g) {
          g.used = true;
          if (!g.hold) g.node.port.postMessage("hold"); // no Start click seen: hold from here
          this.voxpipeGraphs.push(g);
          status.held = 0;
          setState("connecting");
          if (this.connectionState === "connected") release(g);
        }
        return super.addTrack(track, ...streams);
      }
    }
    window.RTCPeerConnection = VoxpipePeerConnection;
  }

  // The Start click: hold from now in the newest graph (the microphone FastRTC opened to
  // list the devices), and in any graph made in the next moments (the one it sends).
  document.addEventListener("click", (e) => {
    const button = e.target && e.target.closest && e.target.closest("#voxpipe-mic button");
    const label = (button && button.textContent || "").trim().toLowerCase();
    if (!label.includes("start") || label.includes("stop")) return;
    startClicked = Date.now();
    status.held = 0;
    status.behind = 0;
    status.log = [];
    setState("connecting");
    const newest = graphs[graphs.length - 1];
    if (newest && !newest.used) {
      newest.hold = true;
      newest.node.port.postMessage("hold");
    }
  }, true);
})();
