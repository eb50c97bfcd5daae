// ringmesh dashboard: a client of the status API on the same origin.
// Every piece of data goes into the DOM as text (textContent), never as markup.
'use strict';

(() => {
  const STATUS_EVERY_MS = 1500;
  const LOGS_EVERY_MS = 2000;
  const LOG_KEEP = 300;
  const TOKEN_KEY = 'ringmesh-api-token';
  const COUNTERS = [
    ['connections_active', 'active', false, false],
    ['connections_total', 'connections', true, false],
    ['requests', 'requests', true, false],
    ['bytes_in', 'bytes in', true, true],
    ['bytes_out', 'bytes out', true, true],
    ['errors', 'errors', true, false],
  ];
  const HEALTH = new Set(['healthy', 'unhealthy', 'unknown', 'napping', 'stopped', 'starting']);

  const $ = (id) => document.getElementById(id);
  const cards = new Map(); // route key -> card {el, ...}
  const prev = new Map(); // route key -> {t, counters}
  let waitingForToken = false;

  // ---- helpers ----

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setText(e, text) {
    const t = String(text);
    if (e.textContent !== t) e.textContent = t;
  }

  function fmtNum(n) {
    return typeof n === 'number' ? n.toLocaleString('en-US') : '–';
  }

  function fmtBytes(n) {
    if (typeof n !== 'number') return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(1)) + ' ' + units[i];
  }

  function fmtDur(s) {
    if (typeof s !== 'number' || !isFinite(s)) return '–';
    s = Math.floor(s);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }

  function fmtRate(r, bytes) {
    if (typeof r !== 'number' || !isFinite(r)) return '';
    if (bytes) return fmtBytes(r) + '/s';
    return (r >= 100 ? Math.round(r).toLocaleString('en-US') : r.toFixed(1)) + '/s';
  }

  function fmtTime(ms) {
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  function showMsg(e, text, kind) {
    e.textContent = text;
    e.className = 'msg' + (kind ? ' msg-' + kind : '');
  }

  // ---- API access (bearer token asked for once, kept in sessionStorage) ----

  class AuthNeeded extends Error {}

  async function api(method, path, body) {
    if (waitingForToken) throw new AuthNeeded('token needed');
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers['Authorization'] = 'Bearer ' + token;
    const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = body;
    }
    const r = await fetch(path, init);
    const text = await r.text();
    if (r.status === 401) {
      askToken(token ? 'The token was refused; enter it again.' : '');
      throw new AuthNeeded('token needed');
    }
    let json = null;
    try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
    return { status: r.status, ok: r.ok, json, text };
  }

  function askToken(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    waitingForToken = true;
    $('auth').hidden = false;
    showMsg($('auth-msg'), why, why ? 'err' : '');
    $('token').focus();
  }

  $('auth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $('token').value = '';
    $('auth').hidden = true;
    waitingForToken = false;
    if (!configLoaded) loadConfig();
    pollStatus();
  });

  function connState(ok, text) {
    const c = $('conn');
    setText(c, text);
    c.className = 'conn ' + (ok ? 'conn-ok' : 'conn-err');
  }

  // ---- routes, backends, processes ----

  function routeCard(r) {
    let c = cards.get(r.key);
    if (c) return c;
    const art = el('article', 'route');
    art.dataset.route = r.key;
    const h = el('h3');
    const name = el('span', 'name');
    const listen = el('span', 'listen');
    const proto = el('span', 'tag proto');
    const lb = el('span', 'tag lb');
    const hosts = el('span', 'hosts');
    h.append(name, listen, proto, lb, hosts);

    const counters = el('div', 'counters');
    const stats = {};
    for (const [field, label] of COUNTERS) {
      const box = el('div', 'stat');
      box.dataset.counter = field;
      const v = el('span', 'value', '–');
      const rate = el('span', 'rate');
      box.append(el('span', 'label', label), v, rate);
      counters.append(box);
      stats[field] = { v, rate };
    }

    const table = el('table', 'backends');
    const thead = el('thead');
    const hr = el('tr');
    for (const col of ['backend', 'address', 'health', 'for', 'check', 'detail',
      'pid', 'process', 'uptime', 'restarts', '']) {
      hr.append(el('th', null, col));
    }
    thead.append(hr);
    const tbody = el('tbody');
    table.append(thead, tbody);
    const wrap = el('div', 'table-wrap');
    wrap.append(table);

    const logs = el('details', 'logs');
    logs.open = true;
    logs.hidden = true;
    const sum = el('summary', null, 'log tail');
    const pre = el('pre', 'log');
    logs.append(sum, pre);

    // The middleware chain, in request order (counters in each tag's title).
    const chain = el('div', 'chain');
    chain.hidden = true;

    art.append(h, chain, counters, wrap, logs);
    c = { art, name, listen, proto, lb, hosts, chain, chainKey: '', stats, tbody, rows: new Map(), logs, pre, since: 0, hasProcs: false };
    cards.set(r.key, c);
    return c;
  }

  function backendRow(c, routeKey, b) {
    let row = c.rows.get(b.name);
    if (row) return row;
    const tr = el('tr');
    tr.dataset.backend = b.name;
    const cells = {};
    for (const k of ['bname', 'addr', 'health', 'since', 'latency', 'detail',
      'pid', 'pstate', 'uptime', 'restarts']) {
      cells[k] = el('td', k);
      tr.append(cells[k]);
    }
    const act = el('td', 'action');
    const kill = el('button', 'kill', 'Kill');
    kill.type = 'button';
    kill.hidden = true;
    kill.addEventListener('click', () => killProcess(routeKey, b.name, kill));
    act.append(kill);
    tr.append(act);
    c.tbody.append(tr);
    row = { tr, cells, kill };
    c.rows.set(b.name, row);
    return row;
  }

  function renderBackend(c, routeKey, b) {
    const row = backendRow(c, routeKey, b);
    const x = row.cells;
    setText(x.bname, b.name);
    setText(x.addr, b.address + (b.cmd ? '' : ' (address only)'));
    const h = b.health || {};
    const hs = HEALTH.has(h.status) ? h.status : (b.status === 'up' ? 'unknown' : 'unhealthy');
    setText(x.health, h.status || b.status || '–');
    x.health.className = 'health h-' + hs;
    setText(x.since, h.since_seconds !== undefined ? fmtDur(h.since_seconds) : '–');
    setText(x.latency, typeof h.latency_ms === 'number' ? h.latency_ms.toFixed(1) + ' ms' : '–');
    let detail = h.detail || '';
    if (b.status === 'cooldown') detail = (detail ? detail + '; ' : '') + 'connect cooldown';
    setText(x.detail, detail);
    x.detail.title = detail;
    const p = b.process;
    if (p) {
      setText(x.pid, p.pid !== null && p.pid !== undefined ? p.pid : '–');
      setText(x.pstate, p.state);
      x.pstate.className = 'pstate p-' + (HEALTH.has(p.state) || p.state === 'running' || p.state === 'crashed' || p.state === 'stopping' ? p.state : 'other');
      setText(x.uptime, p.uptime_seconds !== null && p.uptime_seconds !== undefined ? fmtDur(p.uptime_seconds) : '–');
      setText(x.restarts, fmtNum(p.restarts));
      row.kill.hidden = false;
      if (!row.kill.dataset.busy) row.kill.disabled = p.pid === null || p.pid === undefined;
      let err = '';
      if (p.last_error) err = p.last_error;
      x.pstate.title = err;
    } else {
      for (const k of ['pid', 'pstate', 'uptime', 'restarts']) setText(x[k], '');
      row.kill.hidden = true;
    }
  }

  function renderChain(c, r) {
    const mw = Array.isArray(r.middleware) ? r.middleware : [];
    const counts = Array.isArray(r.middleware_counters) ? r.middleware_counters : [];
    const key = JSON.stringify([mw, counts]);
    if (key === c.chainKey) return;
    c.chainKey = key;
    c.chain.replaceChildren();
    c.chain.hidden = mw.length === 0;
    if (!mw.length) return;
    c.chain.append(el('span', 'label', 'middleware'));
    mw.forEach((m, i) => {
      if (i) c.chain.append(el('span', 'arrow', '→'));
      const t = el('span', 'tag mw', String(m));
      t.dataset.mw = String(m);
      const n = counts[i];
      if (n && typeof n === 'object') {
        t.title = Object.entries(n).map(([k, v]) => k + ': ' + v).join(', ');
      }
      c.chain.append(t);
    });
  }

  function renderRoute(r, now) {
    const c = routeCard(r);
    setText(c.name, r.name || r.key);
    setText(c.listen, r.listen);
    setText(c.proto, r.protocol);
    setText(c.lb, r.load_balance);
    setText(c.hosts, Array.isArray(r.hosts) && r.hosts.length ? 'hosts: ' + r.hosts.join(', ') : '');
    renderChain(c, r);

    const before = prev.get(r.key);
    for (const [field, , rated, bytes] of COUNTERS) {
      const s = c.stats[field];
      setText(s.v, bytes ? fmtBytes(r[field]) : fmtNum(r[field]));
      if (rated && before) {
        const dt = (now - before.t) / 1000;
        const d = r[field] - before.v[field];
        setText(s.rate, dt > 0 && d >= 0 ? fmtRate(d / dt, bytes) : '');
      }
    }
    const v = {};
    for (const [field] of COUNTERS) v[field] = r[field];
    prev.set(r.key, { t: now, v });

    const seen = new Set();
    let procs = false;
    for (const b of r.backends || []) {
      seen.add(b.name);
      if (b.cmd) procs = true;
      renderBackend(c, r.key, b);
    }
    for (const [name, row] of c.rows) {
      if (!seen.has(name)) { row.tr.remove(); c.rows.delete(name); }
    }
    c.hasProcs = procs;
    c.logs.hidden = !procs;
    return c;
  }

  function render(st) {
    setText($('service'), st.service_name || '');
    setText($('m-version'), st.version || '–');
    setText($('m-pid'), st.pid !== undefined ? st.pid : '–');
    setText($('m-uptime'), fmtDur(st.uptime_seconds));
    setText($('m-workers'), st.workers !== undefined ? st.workers : '–');
    setText($('m-io'), st.io_driver || '–');
    setText($('m-generation'), st.generation !== undefined ? st.generation : '–');
    const now = performance.now();
    const routes = Array.isArray(st.routes) ? st.routes : [];
    const box = $('routes');
    const seen = new Set();
    let i = 0;
    for (const r of routes) {
      seen.add(r.key);
      const c = renderRoute(r, now);
      if (box.children[i] !== c.art) box.insertBefore(c.art, box.children[i] || null);
      i++;
    }
    for (const [key, c] of cards) {
      if (!seen.has(key)) { c.art.remove(); cards.delete(key); prev.delete(key); }
    }
    $('no-routes').hidden = routes.length > 0;
    renderSource(st.config_source);
  }

  // ---- fleet (routes from etcd) ----

  const FLEET_EVERY_MS = 3000;
  let fleetTimer = null;

  function renderSource(src) {
    const on = !!src;
    $('fleet').hidden = !on;
    if (!on) { clearTimeout(fleetTimer); fleetTimer = null; return; }
    const state = src.connected ? 'etcd connected' : 'etcd unreachable' + (src.last_error ? ': ' + src.last_error : '');
    setText($('fleet-source'), 'node ' + src.node_id + ' · routes ' + src.key + ' revision ' + src.revision +
      ' (from ' + src.origin + ') · ' + state);
    const rej = $('fleet-rejected');
    rej.hidden = !src.rejected;
    if (src.rejected) {
      setText(rej, 'revision ' + src.rejected.revision + ' refused; serving ' + src.revision + ': ' +
        (src.rejected.errors || []).join('; '));
    }
    if (fleetTimer === null) fleetTimer = setTimeout(pollFleet, 0);
  }

  async function pollFleet() {
    try {
      const r = await api('GET', '/api/fleet');
      if (r.ok && r.json) {
        const rows = [];
        const nodes = Array.isArray(r.json.nodes) ? r.json.nodes : [];
        const now = Date.now() / 1000;
        for (const n of nodes) {
          const tr = el('tr');
          const rev = String(n.config_revision) + (n.config_rejected_revision ? ' (refused ' + n.config_rejected_revision + ')' : '');
          const up = typeof n.started_at === 'number' ? Math.max(0, now - n.started_at) : n.uptime_seconds;
          for (const v of [n.node_id, n.address, n.api || '–', n.version, rev, fmtDur(up), fmtNum(n.connections_open)]) {
            tr.append(el('td', null, v === undefined || v === null ? '–' : String(v)));
          }
          rows.push(tr);
        }
        $('fleet-nodes').replaceChildren(...rows);
      }
    } catch (e) {
      // Status polling reports the connection state; try again later.
    }
    fleetTimer = setTimeout(pollFleet, FLEET_EVERY_MS);
  }

  // One poll at a time: a poll asked for while one runs (after a Kill or a
  // Save) runs right after it, so the chain never doubles.
  let statusTimer = null;
  let statusBusy = false;
  let statusAgain = false;
  async function pollStatus() {
    if (statusBusy) { statusAgain = true; return; }
    statusBusy = true;
    clearTimeout(statusTimer);
    let stop = false;
    try {
      const r = await api('GET', '/api/status');
      if (r.ok && r.json) {
        render(r.json);
        connState(true, (r.json.draining ? 'draining · ' : 'live · ') + fmtTime(Date.now()));
      } else {
        connState(false, 'status: HTTP ' + r.status);
      }
    } catch (e) {
      if (e instanceof AuthNeeded) {
        connState(false, 'token needed');
        stop = true; // the token form starts polling again
      } else {
        connState(false, 'disconnected · retrying');
      }
    } finally {
      statusBusy = false;
    }
    if (stop) { statusAgain = false; return; }
    statusTimer = setTimeout(pollStatus, statusAgain ? 0 : STATUS_EVERY_MS);
    statusAgain = false;
  }

  async function killProcess(routeKey, backend, button) {
    button.dataset.busy = '1';
    button.disabled = true;
    const msg = $('action-msg');
    const path = '/api/processes/' + encodeURIComponent(routeKey) + '/' + encodeURIComponent(backend) + '/kill';
    try {
      const r = await api('POST', path);
      if (r.ok && r.json) {
        const k = (r.json.killed || []).filter((x) => x.was_running).map((x) => x.pid);
        showMsg(msg, k.length ? 'kill sent to ' + backend + ' (pid ' + k.join(', ') + ')' : backend + ' was not running', 'ok');
      } else {
        showMsg(msg, 'kill ' + backend + ': HTTP ' + r.status + ' ' + ((r.json && r.json.error) || r.text), 'err');
      }
    } catch (e) {
      if (!(e instanceof AuthNeeded)) showMsg(msg, 'kill ' + backend + ': ' + e.message, 'err');
    } finally {
      delete button.dataset.busy;
      pollStatus();
    }
  }

  // ---- log tails ----

  async function pollLogs() {
    for (const [key, c] of cards) {
      if (!c.hasProcs || !c.logs.open) continue;
      try {
        const r = await api('GET', '/api/logs/' + encodeURIComponent(key) + '?since=' + c.since);
        if (!r.ok || !r.json) continue;
        const lines = Array.isArray(r.json.lines) ? r.json.lines : [];
        if (typeof r.json.next === 'number') {
          if (r.json.next < c.since) { c.pre.replaceChildren(); c.since = 0; continue; }
          c.since = r.json.next;
        }
        if (!lines.length) continue;
        const atBottom = c.pre.scrollTop + c.pre.clientHeight >= c.pre.scrollHeight - 4;
        const frag = document.createDocumentFragment();
        for (const l of lines) {
          const line = el('div', 'line' + (l.stream === 'stderr' ? ' stderr' : ''));
          line.append(el('span', 'ts', fmtTime(l.ts_ms)), el('span', 'src', l.backend), el('span', 'text', l.line));
          frag.append(line);
        }
        c.pre.append(frag);
        while (c.pre.childElementCount > LOG_KEEP) c.pre.firstElementChild.remove();
        if (atBottom) c.pre.scrollTop = c.pre.scrollHeight;
      } catch (e) {
        if (e instanceof AuthNeeded) break;
      }
    }
    setTimeout(pollLogs, LOGS_EVERY_MS);
  }

  // ---- config editor ----

  let configLoaded = false;

  async function loadConfig() {
    const msg = $('config-msg');
    try {
      const r = await api('GET', '/api/config');
      if (r.ok) {
        $('config').value = r.text;
        configLoaded = true;
        showMsg(msg, 'loaded the running config', '');
      } else {
        showMsg(msg, 'GET /api/config: HTTP ' + r.status, 'err');
      }
    } catch (e) {
      if (!(e instanceof AuthNeeded)) showMsg(msg, 'GET /api/config: ' + e.message, 'err');
    }
  }

  async function saveConfig() {
    const msg = $('config-msg');
    const list = $('config-errors');
    const btn = $('config-save');
    list.replaceChildren();
    showMsg(msg, 'saving…', '');
    btn.disabled = true;
    try {
      const r = await api('PUT', '/api/config', $('config').value);
      if (r.ok) {
        let text = 'saved and applied';
        if (r.json && r.json.generation !== undefined) text += ' (generation ' + r.json.generation + ')';
        showMsg(msg, text, 'ok');
        await loadConfig();
        showMsg(msg, text, 'ok');
        pollStatus();
        return;
      }
      const j = r.json || {};
      const errors = Array.isArray(j.errors) ? j.errors : [];
      showMsg(msg, 'HTTP ' + r.status + ': ' + (j.error || r.text.trim() || 'refused'), 'err');
      for (const e of errors) {
        const li = el('li', 'config-error');
        li.append(el('code', 'path', e.path ? e.path : '(top level)'), el('span', 'message', e.message));
        list.append(li);
      }
    } catch (e) {
      if (!(e instanceof AuthNeeded)) showMsg(msg, 'PUT /api/config: ' + e.message, 'err');
    } finally {
      btn.disabled = false;
    }
  }

  $('config-save').addEventListener('click', saveConfig);
  $('config-load').addEventListener('click', () => { $('config-errors').replaceChildren(); loadConfig(); });

  // ---- WebSocket sessions (gateway routes) ----
  // The panel shows once a gateway route has sessions: counts per route, a
  // list filtered by the search box (first SESSIONS_SHOWN matches), a Close
  // button per session.
  const SESSIONS_EVERY_MS = 2000;
  const SESSIONS_SHOWN = 200;
  let sessionsTimer = null;
  let lastSessions = [];

  function renderSessions() {
    const q = $('session-search').value.trim().toLowerCase();
    const perRoute = new Map();
    for (const s of lastSessions) perRoute.set(s.route, (perRoute.get(s.route) || 0) + 1);
    setText($('sessions-count'), [...perRoute].map(([r, n]) => r + ': ' + n).join(' · ') || 'none');
    const match = (s) => !q || [s.id, s.user, s.client, ...(s.channels || [])]
      .some((v) => String(v).toLowerCase().includes(q));
    const rows = [];
    for (const s of lastSessions) {
      if (!match(s)) continue;
      if (rows.length >= SESSIONS_SHOWN) break;
      const tr = el('tr');
      tr.dataset.id = s.id;
      const close = el('button', 'kill', 'Close');
      close.type = 'button';
      close.addEventListener('click', () => closeSession(s.id, close));
      const td = el('td');
      td.append(close);
      tr.append(el('td', 'mono', s.id), el('td', '', s.route), el('td', 'mono', s.client),
        el('td', '', s.user || '–'), el('td', '', (s.channels || []).join(', ') || '–'),
        el('td', 'num', fmtNum(s.messages_in)), el('td', 'num', fmtNum(s.messages_out)), td);
      rows.push(tr);
    }
    $('sessions').tBodies[0].replaceChildren(...rows);
  }

  async function pollSessions() {
    clearTimeout(sessionsTimer);
    try {
      const r = await api('GET', '/api/sessions?limit=10000');
      if (r.ok && r.json && Array.isArray(r.json.sessions)) {
        lastSessions = r.json.sessions;
        if (lastSessions.length) $('sessions-panel').hidden = false;
        renderSessions();
      }
    } catch (_) { /* the status poll shows the connection state */ }
    sessionsTimer = setTimeout(pollSessions, SESSIONS_EVERY_MS);
  }

  async function closeSession(id, button) {
    button.disabled = true;
    try {
      const r = await api('POST', '/api/sessions/' + encodeURIComponent(id) + '/close',
        JSON.stringify({ code: 1000, reason: 'closed from the dashboard' }));
      showMsg($('sessions-msg'), r.ok ? 'closed ' + id : 'HTTP ' + r.status + ': ' + ((r.json && r.json.error) || r.text.trim()), r.ok ? 'ok' : 'err');
    } catch (e) {
      if (!(e instanceof AuthNeeded)) showMsg($('sessions-msg'), 'close: ' + e.message, 'err');
    }
    pollSessions();
  }

  $('session-search').addEventListener('input', renderSessions);

  // ---- start ----
  loadConfig();
  pollStatus();
  setTimeout(pollLogs, 300);
  setTimeout(pollSessions, 200);
})();
