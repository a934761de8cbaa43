// The kvs-emulator console: no library, no network beyond the emulator. Playback is a small
// Media Source Extensions player over the HLS session's fragmented-MP4 segments: it reads the
// media playlist, appends the init segment and each new media segment once, and for a live
// session polls the playlist every second (as the service recommends for LIVE).
'use strict';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
let current = params.get('stream');

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
}

async function getBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.arrayBuffer();
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

function fmtTime(ms) {
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

class Player {
  constructor(video, stateEl) {
    this.video = video;
    this.stateEl = stateEl;
    this.run = null;
  }

  state(text) {
    this.stateEl.textContent = text;
  }

  stop() {
    this.run = null;
  }

  async start(stream, mode) {
    const run = {};
    this.run = run;
    this.state(`${mode}: opening session`);
    const { url } = await getJSON(`api/session?name=${encodeURIComponent(stream)}&mode=${mode}`);
    const masterUrl = new URL(url, location.href);
    const master = await (await fetch(masterUrl)).text();
    const codecs = (/CODECS="([^"]+)"/.exec(master) || [])[1] || 'avc1.42c01e';
    const mediaLine = master.split('\n').find((l) => l && !l.startsWith('#'));
    const playlistUrl = new URL(mediaLine, masterUrl);
    const type = `video/mp4; codecs="${codecs}"`;
    if (!window.MediaSource || !MediaSource.isTypeSupported(type)) {
      this.state(`this browser cannot play ${type}`);
      return;
    }
    const ms = new MediaSource();
    this.video.src = URL.createObjectURL(ms);
    await new Promise((res) => ms.addEventListener('sourceopen', res, { once: true }));
    const sb = ms.addSourceBuffer(type);
    const append = (buf) => new Promise((res, rej) => {
      sb.addEventListener('updateend', res, { once: true });
      sb.addEventListener('error', () => rej(new Error('append failed')), { once: true });
      sb.appendBuffer(buf);
    });
    const seen = new Set();
    let initDone = false;
    let started = false;
    while (this.run === run) {
      const text = await (await fetch(playlistUrl)).text();
      if (!initDone) {
        const map = /#EXT-X-MAP:URI="([^"]+)"/.exec(text);
        await append(await getBytes(new URL(map[1], playlistUrl)));
        initDone = true;
      }
      for (const line of text.split('\n')) {
        if (!line || line.startsWith('#') || seen.has(line)) continue;
        seen.add(line);
        if (this.run !== run) return;
        await append(await getBytes(new URL(line, playlistUrl)));
        if (!started && sb.buffered.length) {
          started = true;
          this.video.currentTime = sb.buffered.start(0);
          this.video.play().catch(() => {});
        }
        const number = new URL(line, playlistUrl).searchParams.get('FragmentNumber');
        document.querySelectorAll('.frag.playing').forEach((f) => f.classList.remove('playing'));
        const tile = document.querySelector(`.frag[data-fragment="${number}"]`);
        if (tile) tile.classList.add('playing');
      }
      // Keep the buffer bounded on long live sessions: drop what is 30 s behind the playhead.
      if (sb.buffered.length && this.video.currentTime - sb.buffered.start(0) > 60 && !sb.updating) {
        sb.remove(sb.buffered.start(0), this.video.currentTime - 30);
        await new Promise((res) => sb.addEventListener('updateend', res, { once: true }));
      }
      this.state(`${mode}: ${seen.size} segments`);
      if (text.includes('#EXT-X-ENDLIST')) {
        if (ms.readyState === 'open' && !sb.updating) ms.endOfStream();
        this.state(`${mode}: ${seen.size} segments (complete)`);
        return;
      }
      await sleep(1000);
    }
  }
}

const player = new Player($('#video'), $('#player-state'));

async function loadStreams() {
  const { streams } = await getJSON('api/streams');
  if (!current && streams.length) current = streams[0].name;
  const ul = $('#streams');
  ul.textContent = '';
  for (const s of streams) {
    const a = el('a', { href: `?stream=${encodeURIComponent(s.name)}` }, s.name);
    const li = el('li', { class: s.name === current ? 'selected' : '' }, a,
      el('span', { class: 'badge' }, String(s.fragments)),
      s.live ? el('span', { class: 'badge live' }, 'live') : null,
      s.errors ? el('span', { class: 'badge errors' }, `${s.errors} errors`) : null);
    ul.append(li);
  }
}

async function loadStream() {
  if (!current) return;
  const s = await getJSON(`api/stream?name=${encodeURIComponent(current)}`);
  $('#title').textContent = s.name;
  const tl = $('#timeline');
  const have = new Set([...tl.children].map((c) => c.dataset.fragment));
  const wanted = new Set(s.fragments.map((f) => f.number));
  for (const c of [...tl.children]) if (!wanted.has(c.dataset.fragment)) c.remove();
  for (const f of s.fragments) {
    if (have.has(f.number)) continue;
    const img = el('img', {
      loading: 'lazy',
      alt: `fragment ${f.number}`,
      src: `api/thumbnail?name=${encodeURIComponent(s.name)}&fragment=${f.number}`,
    });
    const tile = el('div', {
      class: 'frag',
      'data-fragment': f.number,
      title: `${f.number}\nproducer ${fmtTime(f.producerTimestampMs)}\n${f.durationMs} ms, ${f.size} bytes`,
    }, img, el('div', {}, `${fmtTime(f.producerTimestampMs).slice(11)} · ${(f.durationMs / 1000).toFixed(1)} s`));
    tl.append(tile);
  }
  $('#fragment-count').textContent = String(s.fragments.length);
  tl.dataset.count = String(s.fragments.length);
  const tbody = $('#acks tbody');
  tbody.textContent = '';
  for (const a of s.acks) {
    const error = a.errorId ? `${a.errorId} ${a.errorCode || ''}` : '';
    tbody.append(el('tr', { class: a.event === 'ERROR' ? 'error' : '' },
      el('td', {}, fmtTime(a.atMs).slice(11)),
      el('td', {}, String(a.connection)),
      el('td', {}, a.event),
      el('td', {}, a.fragmentTimecode === null ? '' : String(a.fragmentTimecode)),
      el('td', {}, a.fragmentNumber || ''),
      el('td', {}, error)));
  }
}

async function refresh() {
  try {
    await loadStreams();
    await loadStream();
    $('#status').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('#status').textContent = String(e);
  }
}

function play(mode) {
  if (!current) return;
  player.start(current, mode).catch((e) => player.state(`${mode}: ${e.message}`));
}

$('#live').addEventListener('click', () => play('LIVE'));
$('#ondemand').addEventListener('click', () => play('ON_DEMAND'));

(async () => {
  await refresh();
  document.body.dataset.ready = 'true';
  const mode = params.get('play');
  if (mode === 'LIVE' || mode === 'ON_DEMAND') play(mode);
  setInterval(refresh, 2000);
})();
