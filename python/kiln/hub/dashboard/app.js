/* The Kiln hub's dashboard: hash routes, a login form, and pages the hub pushes over /api/live.
 *
 * No framework and nothing fetched from elsewhere: the page is served by the hub with a Content
 * Security Policy of 'self', so everything here is built with the DOM (text as text, never markup:
 * names and reasons come from peers) and charts are drawn by the vendored uPlot.
 */
(function () {
  'use strict';

  const PAGES = ['overview', 'providers', 'activities', 'jobs', 'images', 'events'];
  const HISTORY = 720; // samples: an hour, one every 5 s (kiln.hub.history)
  const LABELS = {
    providers: 'Providers',
    activities: 'Activities',
    offered_cpus: 'CPUs offered',
    rented_cpus: 'CPUs rented',
    used_cpus: 'CPUs used',
    commands: 'Commands/s',
    bytes: 'Bytes/s'
  };
  const CHARTS = [
    { title: 'Providers and activities', series: ['providers', 'activities'] },
    { title: 'CPUs', series: ['offered_cpus', 'rented_cpus', 'used_cpus'] },
    { title: 'Commands a second', series: ['commands'] },
    { title: 'Bytes relayed a second', series: ['bytes'], bytes: true }
  ];
  const COLORS = ['#2f6fde', '#d9822b', '#2e9e5b', '#b03a9e'];

  const state = {
    me: null, // {admin, name} once logged in
    socket: null,
    retry: 0,
    route: { page: 'overview', job: null },
    filters: { providers: '', activities: '' },
    offset: 0, // the hub's clock minus this browser's, in seconds
    history: null, // {series, rows}
    charts: [],
    jobChart: null, // the uPlot of the job's attempts over time
    last: {} // the last page data by page, for redrawing on resize
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child);
    return node;
  }

  // --- formats ------------------------------------------------------------------------------

  function bytes(n) {
    if (n === null || n === undefined) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n;
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(Math.round(value)) : value.toFixed(value < 10 ? 1 : 0)) + ' ' + units[unit];
  }

  function number(n, digits) {
    if (n === null || n === undefined) return '';
    return Number(n).toLocaleString('en', { maximumFractionDigits: digits === undefined ? 2 : digits });
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return '';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  function hubNow() {
    return Date.now() / 1000 + state.offset;
  }

  function ago(when) {
    return when ? duration(hubNow() - when) : '';
  }

  function clock(when) {
    return when ? new Date(when * 1000).toLocaleTimeString('en-GB') : '';
  }

  function count(n, one, many) {
    return number(n) + ' ' + (n === 1 ? one : many);
  }

  function credits(micro) {
    return micro ? (micro / 1e6).toLocaleString('en', { maximumFractionDigits: 6 }) : '0';
  }

  // --- login ---------------------------------------------------------------------------------

  async function whoAmI() {
    const answer = await fetch('/api/me', { credentials: 'same-origin', cache: 'no-store' });
    if (answer.status === 200) return answer.json();
    if (answer.status === 401 || answer.status === 403) return null;
    throw new Error('the hub answered ' + answer.status);
  }

  async function start() {
    let me;
    try {
      me = await whoAmI();
    } catch (e) {
      setLive('cannot reach the hub: ' + e.message, 'down');
      setTimeout(start, 3000);
      return;
    }
    if (me === null) {
      showLogin();
      return;
    }
    state.me = me;
    $('login').hidden = true;
    $('nav').hidden = false;
    $('logout').hidden = false;
    $('who').textContent = me.name + (me.admin ? ' (admin)' : '');
    route();
    connect();
  }

  function showLogin(message) {
    state.me = null;
    disconnect();
    for (const page of PAGES) $('page-' + page).hidden = true;
    $('nav').hidden = true;
    $('logout').hidden = true;
    $('who').textContent = '';
    setLive('', '');
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('token').focus();
  }

  async function login(event) {
    event.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    $('login-error').textContent = '';
    let answer;
    try {
      answer = await fetch('/api/login', {
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { Authorization: 'Bearer ' + token }
      });
    } catch (e) {
      $('login-error').textContent = 'cannot reach the hub: ' + e.message;
      return;
    }
    if (answer.ok) {
      $('token').value = '';
      await start();
    } else if (answer.status === 401) {
      $('login-error').textContent = 'unknown or revoked token (a provider token shows nothing)';
    } else if (answer.status === 429) {
      $('login-error').textContent =
        'too many wrong tokens from here: try again in ' + (answer.headers.get('Retry-After') || 'a few') + ' s';
    } else {
      $('login-error').textContent = 'the hub answered ' + answer.status;
    }
  }

  async function logout() {
    try {
      await fetch('/api/logout', { credentials: 'same-origin', cache: 'no-store' });
    } finally {
      showLogin();
    }
  }

  // --- the live connection -----------------------------------------------------------------

  function setLive(text, kind) {
    const live = $('live');
    live.textContent = text;
    live.className = 'live ' + (kind || '');
  }

  function connect() {
    disconnect();
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(scheme + '//' + location.host + '/api/live');
    state.socket = socket;
    setLive('connecting', 'wait');
    socket.addEventListener('open', () => {
      state.retry = 0;
      setLive('live', 'up');
      ask();
    });
    socket.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      receive(message);
    });
    socket.addEventListener('close', () => {
      if (state.socket !== socket) return;
      state.socket = null;
      setLive('reconnecting', 'down');
      state.retry = Math.min(state.retry + 1, 5);
      setTimeout(async () => {
        if (state.me === null) return;
        try {
          const me = await whoAmI();
          if (me === null) {
            showLogin('the session ended: log in again');
            return;
          }
        } catch {
          // the hub is away: try again later
        }
        if (state.me !== null && state.socket === null) connect();
      }, 500 * 2 ** state.retry);
    });
  }

  function disconnect() {
    const socket = state.socket;
    state.socket = null;
    if (socket) socket.close(1000);
  }

  function ask() {
    const socket = state.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const page = state.route.page;
    socket.send(JSON.stringify({ page, filter: state.filters[page] || '', job: state.route.job }));
  }

  function receive(message) {
    if (message.type === 'hello') {
      state.offset = message.now - Date.now() / 1000;
    } else if (message.type === 'history') {
      takeHistory(message);
    } else if (message.type === 'page' && message.page === state.route.page) {
      state.last[message.page] = message;
      RENDER[message.page](message);
    }
  }

  // --- routes --------------------------------------------------------------------------------

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    const page = PAGES.includes(parts[0]) ? parts[0] : 'overview';
    const job = page === 'jobs' && parts.length > 1 && parts[1] ? decodeURIComponent(parts.slice(1).join('/')) : null;
    return { page, job };
  }

  function route() {
    if (state.me === null) return;
    const next = parseRoute();
    const changed = next.page !== state.route.page;
    state.route = next;
    for (const page of PAGES) $('page-' + page).hidden = page !== next.page;
    for (const link of $('nav').querySelectorAll('a')) {
      if (link.dataset.page === next.page) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.title = 'Kiln hub: ' + next.page;
    if (next.page !== 'overview') destroyCharts();
    ask();
    if (changed) {
      const last = state.last[next.page];
      if (last) RENDER[next.page](last);
    }
  }

  // --- overview ------------------------------------------------------------------------------

  function stat(id, label, value, note) {
    return el('div', { class: 'stat', id: 'stat-' + id }, el('span', { class: 'label', text: label }),
      el('span', { class: 'value', text: value }), note ? el('span', { class: 'note', text: note }) : null);
  }

  function renderOverview(data) {
    const cards = [
      stat('providers', 'Providers', number(data.providers)),
      data.requestors !== undefined ? stat('requestors', 'Requestors', number(data.requestors)) : null,
      stat('activities', data.requestors !== undefined ? 'Activities' : 'Your activities', number(data.activities)),
      stat('cpus', 'CPUs rented / offered', number(data.cpus.rented) + ' / ' + number(data.cpus.offered),
        data.cpus.used !== undefined ? number(data.cpus.used) + ' used' : null),
      stat('memory', 'Memory rented / offered', bytes(data.memory.rented) + ' / ' + bytes(data.memory.offered),
        data.memory.used !== undefined ? bytes(data.memory.used) + ' used' : null)
    ];
    if (data.rents) {
      // placed, and the others by the error they were answered with (no_match: nothing free then)
      const others = Object.entries(data.rents).filter(([result]) => result !== 'ok').sort((a, b) => b[1] - a[1]);
      const note = others.slice(0, 2).map(([result, n]) => number(n) + ' ' + result.replace(/_/g, ' ')).join(', ');
      cards.push(stat('rents', 'Rents placed', number(data.rents.ok || 0), note || null));
    }
    if (data.rates) {
      cards.push(stat('commands', 'Commands a second', number(data.rates.commands)));
      cards.push(stat('bytes', 'Relayed a second', bytes(data.rates.bytes)));
    }
    if (data.store) cards.push(stat('store', 'Image store', bytes(data.store.bytes), count(data.store.images, 'image', 'images')));
    $('stats').replaceChildren(...cards.filter(Boolean));
  }

  function takeHistory(message) {
    if (message.reset || !state.history) state.history = { series: message.series, rows: [] };
    const rows = state.history.rows;
    rows.push(...message.rows);
    if (rows.length > HISTORY) rows.splice(0, rows.length - HISTORY);
    if (state.route.page === 'overview') drawCharts();
  }

  function chartWidth() {
    const box = $('charts');
    const width = box.clientWidth || 600;
    const frame = 18; // a figure's padding and border
    return (width >= 760 ? Math.floor((width - 16) / 2) : width) - frame;
  }

  function destroyCharts() {
    for (const chart of state.charts) chart.plot.destroy();
    state.charts = [];
    $('charts').replaceChildren();
  }

  function drawCharts() {
    const history = state.history;
    if (!history || typeof uPlot === 'undefined') return;
    const columns = [history.rows.map((row) => row[0])];
    const index = {};
    history.series.forEach((name, i) => {
      index[name] = i + 1;
    });
    for (let i = 1; i <= history.series.length; i++) columns.push(history.rows.map((row) => row[i]));
    // each chart with those of its series the viewer is shown (a requestor's: the market's)
    const wanted = CHARTS.map((chart) => ({ ...chart, series: chart.series.filter((name) => name in index) }))
      .filter((chart) => chart.series.length > 0);
    if (state.charts.length !== wanted.length) {
      destroyCharts();
      for (const chart of wanted) {
        const figure = el('figure', { class: 'chart' }, el('figcaption', { text: chart.title }));
        $('charts').append(figure);
        const options = {
          width: chartWidth(),
          height: 180,
          series: [{}, ...chart.series.map((name, i) => ({ label: LABELS[name], stroke: COLORS[i], width: 2 }))],
          axes: [{}, { size: 60, values: chart.bytes ? (u, ticks) => ticks.map(bytes) : undefined }],
          scales: { y: { range: (u, min, max) => [0, Math.max(chart.bytes ? 1024 : 1, max)] } },
          legend: { live: false }
        };
        const data = [columns[0], ...chart.series.map((name) => columns[index[name]])];
        state.charts.push({ chart, plot: new uPlot(options, data, figure) });
      }
      return;
    }
    for (const { chart, plot } of state.charts) {
      plot.setData([columns[0], ...chart.series.map((name) => columns[index[name]])]);
    }
  }

  function resizeCharts() {
    for (const { plot } of state.charts) plot.setSize({ width: chartWidth(), height: 180 });
    if (state.route.page === 'jobs' && state.last.jobs) renderJobs(state.last.jobs);
  }

  // --- providers -----------------------------------------------------------------------------

  function meter(values, format) {
    // offered, rented, used (when shown): bars of one scale, the numbers beside
    const [offered, rented, used] = values;
    const bar = el('span', { class: 'meter', role: 'img' });
    const rentedBar = el('span', { class: 'rented' });
    rentedBar.style.width = (offered ? Math.min(100, (100 * rented) / offered) : 0) + '%';
    bar.append(rentedBar);
    let label = format(rented) + ' of ' + format(offered) + ' rented';
    if (used !== undefined) {
      const usedBar = el('span', { class: 'used' });
      usedBar.style.width = (offered ? Math.min(100, (100 * used) / offered) : 0) + '%';
      bar.append(usedBar);
      label += ', ' + format(used) + ' used';
    }
    bar.setAttribute('aria-label', label);
    const text = format(rented) + ' / ' + format(offered) + (used !== undefined ? ' (' + format(used) + ' used)' : '');
    return el('td', { class: 'capacity' }, bar, el('span', { class: 'numbers', text }));
  }

  function renderProviders(data) {
    const rows = data.rows.map((p) =>
      el('tr', { 'data-name': p.name },
        el('th', { scope: 'row', text: p.name }),
        meter(p.cpus, (n) => number(n)),
        meter(p.memory, bytes),
        el('td', { class: 'num', text: number(p.activities) }),
        el('td', { class: 'num', text: number(p.images) }),
        el('td', { text: p.price }),
        el('td', { class: 'num', text: number(p.reputation, 3) }),
        el('td', { text: p.since ? ago(p.since) : '' })
      ));
    $('providers-table').tBodies[0].replaceChildren(...rows);
    const shown = data.rows.length < data.matched ? 'the first ' + data.rows.length + ' of ' : '';
    $('providers-count').textContent =
      shown + (data.filter ? number(data.matched) + ' matching, of ' + count(data.total, 'provider', 'providers')
        : count(data.matched, 'provider', 'providers'));
  }

  // --- activities ----------------------------------------------------------------------------

  function renderActivities(data) {
    const rows = data.rows.map((a) =>
      el('tr', { 'data-id': a.id, class: 'state-' + a.state },
        el('th', { scope: 'row' }, el('code', { text: a.id })),
        el('td', { text: a.requestor }),
        el('td', { text: a.provider }),
        el('td', { class: 'image', text: a.image }),
        el('td', { text: a.state }),
        el('td', { text: ago(a.started) }),
        el('td', { class: 'num', text: number(a.cpus) }),
        el('td', { class: 'num', text: a.used_cpus === null ? '–' : number(a.used_cpus) }), // – not reported yet
        el('td', { class: 'num', text: a.used_memory === null ? '–' : bytes(a.used_memory) })
      ));
    const body = $('activities-table').tBodies[0];
    if (rows.length === 0) {
      rows.push(el('tr', { class: 'empty' }, el('td', { colspan: 9, text: 'No activity.' })));
    }
    body.replaceChildren(...rows);
    $('activities-count').textContent =
      (data.rows.length < data.matched ? 'the latest ' + data.rows.length + ' of ' : '') +
      count(data.matched, 'activity', 'activities');
  }

  // --- jobs ----------------------------------------------------------------------------------

  function renderJobs(data) {
    const chosen = data.job ? data.job.group : null;
    const rows = data.jobs.map((j) => {
      const link = el('a', { href: '#/jobs/' + encodeURIComponent(j.group), text: j.group });
      if (j.group === chosen) link.setAttribute('aria-current', 'true');
      return el('tr', { 'data-group': j.group, class: j.group === chosen ? 'chosen' : null },
        el('th', { scope: 'row' }, link),
        el('td', { text: j.requestor }),
        el('td', { class: 'num', text: number(j.done) }),
        el('td', { class: 'num', text: number(j.failed) }),
        el('td', { class: 'num', text: number(j.retried) }),
        el('td', { class: 'num', text: number(j.running) }),
        el('td', { class: 'num', text: credits(j.cost) }),
        el('td', { text: ago(j.last) })
      );
    });
    if (rows.length === 0) {
      rows.push(el('tr', { class: 'empty' }, el('td', { colspan: 8, text: 'No job yet.' })));
    }
    $('jobs-table').tBodies[0].replaceChildren(...rows);
    const box = $('job');
    if (!data.job) {
      box.replaceChildren();
      return;
    }
    const attempts = data.job.attempts.map(([task, attempt, provider, startAt, end, outcome, reason, moved]) => ({
      task, attempt, provider, start: startAt, end, outcome, reason, moved
    }));
    const heading = el('h2', { text: 'Timeline of ' + data.job.group });
    if (attempts.length === 0) {
      box.replaceChildren(heading, el('p', { class: 'count', text: 'No attempt reported: its requestor sends no task reports.' }));
      return;
    }
    const note = data.job.total > attempts.length
      ? el('p', { class: 'count', text: 'the latest ' + attempts.length + ' of ' + data.job.total + ' attempts' })
      : null;
    box.replaceChildren(...[heading, note, gantt(attempts), progressChart(attempts)].filter(Boolean));
  }

  function gantt(attempts) {
    const width = Math.max(300, ($('job').clientWidth || 600) - 18); // within the figure's padding and border
    const providers = [...new Set(attempts.map((a) => a.provider))].sort();
    const lane = 24;
    const left = Math.min(160, Math.max(80, width * 0.25));
    const top = 8;
    const height = top + providers.length * lane + 28;
    const now = hubNow();
    const first = Math.min(...attempts.map((a) => a.start));
    const last = Math.max(...attempts.map((a) => (a.end === null ? now : a.end)));
    const span = Math.max(last - first, 0.001);
    const x = (t) => left + ((t - first) / span) * (width - left - 8);
    const figure = el('figure', { class: 'gantt-box' });
    const chart = svg('svg', {
      id: 'gantt', class: 'gantt', width, height, viewBox: '0 0 ' + width + ' ' + height, role: 'img',
      'aria-label': 'Attempts of ' + attempts.length + ' tasks on ' + providers.length + ' providers over ' + duration(span)
    });
    providers.forEach((name, i) => {
      const y = top + i * lane;
      const label = svg('text', { x: left - 6, y: y + lane / 2 + 4, class: 'lane', 'text-anchor': 'end' });
      label.textContent = name.length > 22 ? name.slice(0, 21) + '…' : name;
      chart.append(svg('rect', { x: left, y, width: width - left - 8, height: lane, class: i % 2 ? 'band odd' : 'band' }), label);
    });
    for (const a of attempts) {
      const y = top + providers.indexOf(a.provider) * lane + 3;
      const end = a.end === null ? now : a.end;
      const bar = svg('rect', {
        x: x(a.start), y, width: Math.max(2, x(end) - x(a.start)), height: lane - 6, rx: 2,
        class: 'bar ' + (a.end === null ? 'running' : /^[a-z]+$/.test(a.outcome) ? a.outcome : 'other')
      });
      const tip = svg('title');
      tip.textContent = 'task ' + a.task + ', attempt ' + a.attempt + ' on ' + (a.provider || 'no provider') + ': ' +
        (a.end === null ? 'running' : a.outcome + ' in ' + duration(end - a.start)) + (a.reason ? ' — ' + a.reason : '') +
        (a.moved ? ', ' + bytes(a.moved) + ' moved' : '');
      bar.append(tip);
      chart.append(bar);
    }
    const axis = top + providers.length * lane + 16;
    const ticks = width < 500 ? 2 : 4;
    // decimals enough for the ticks to differ: a job of 0.6 s is ticked 0.15, 0.30, ... (not 0.2, 0.3, 0.5)
    const digits = Math.min(3, Math.max(0, Math.ceil(-Math.log10(span / ticks))) + 1);
    for (let i = 0; i <= ticks; i++) {
      const t = first + (span * i) / ticks;
      const anchor = i === 0 ? 'start' : i === ticks ? 'end' : 'middle';
      const tick = svg('text', { x: x(t), y: axis, class: 'tick', 'text-anchor': anchor });
      tick.textContent = i === 0 ? clock(t) : '+' + (span < 20 ? (t - first).toFixed(digits) + ' s' : duration(t - first));
      chart.append(tick);
    }
    const legend = el('figcaption', { class: 'legend' },
      ...['done', 'retried', 'failed', 'lost', 'running'].map((kind) =>
        el('span', {}, el('span', { class: 'key ' + kind }), kind + ' ')));
    figure.append(chart, legend);
    return figure;
  }

  function progressChart(attempts) {
    // tasks done, failed and retried over time: each attempt counted at its end
    const figure = el('figure', { class: 'chart' }, el('figcaption', { text: 'Attempts ended over time' }));
    if (typeof uPlot === 'undefined') return figure;
    const ended = attempts.filter((a) => a.end !== null).sort((a, b) => a.end - b.end);
    if (ended.length === 0) return figure;
    const kinds = ['done', 'failed', 'retried'];
    const counts = { done: 0, failed: 0, retried: 0 };
    const columns = [[], [], [], []];
    for (const a of ended) {
      if (a.outcome in counts) counts[a.outcome] += 1;
      columns[0].push(a.end);
      kinds.forEach((kind, i) => columns[i + 1].push(counts[kind]));
    }
    const options = {
      width: Math.max(300, ($('job').clientWidth || 600) - 18),
      height: 160,
      series: [{}, ...kinds.map((kind, i) => ({ label: kind, stroke: ['#2e9e5b', '#c0392b', '#d9822b'][i], width: 2 }))],
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      legend: { live: false }
    };
    requestAnimationFrame(() => {
      if (state.jobChart) state.jobChart.destroy();
      state.jobChart = figure.isConnected ? new uPlot(options, columns, figure) : null;
    });
    return figure;
  }

  // --- images and events ---------------------------------------------------------------------

  function renderImages(data) {
    const rows = data.rows.map((i) =>
      el('tr', { 'data-digest': i.digest },
        el('th', { scope: 'row', text: i.tags.join(', ') || '(untagged)' }),
        el('td', {}, el('code', { title: i.digest, text: i.digest.slice(7, 19) })),
        el('td', { class: 'num', text: bytes(i.size) }),
        el('td', { text: i.last_used ? ago(i.last_used) + ' ago' : 'never' }),
        el('td', { class: 'num', text: number(i.in_use) }),
        el('td', { text: i.holders.join(', ') + (i.held > i.holders.length ? ' and ' + (i.held - i.holders.length) + ' more' : '') })
      ));
    if (rows.length === 0) rows.push(el('tr', { class: 'empty' }, el('td', { colspan: 6, text: 'No image stored.' })));
    $('images-table').tBodies[0].replaceChildren(...rows);
    $('images-count').textContent = count(data.matched, 'image', 'images') + (data.used !== null ? ', ' + bytes(data.used) : '');
  }

  function renderEvents(data) {
    const items = data.rows.map((e) =>
      el('li', { class: 'event ' + e.kind, 'data-seq': e.seq },
        el('time', { datetime: new Date(e.at * 1000).toISOString(), text: clock(e.at) }),
        el('span', { class: 'kind', text: e.kind }),
        el('span', { class: 'name', text: (e.role ? e.role + ' ' : '') + e.name }),
        el('span', { class: 'detail', text: e.detail })
      ));
    if (items.length === 0) items.push(el('li', { class: 'empty', text: 'Nothing happened yet.' }));
    $('events').replaceChildren(...items);
  }

  const RENDER = {
    overview: renderOverview,
    providers: renderProviders,
    activities: renderActivities,
    jobs: renderJobs,
    images: renderImages,
    events: renderEvents
  };

  // --- wiring --------------------------------------------------------------------------------

  let filterTimer = null;
  function filtered(event) {
    const page = event.target.dataset.filter;
    state.filters[page] = event.target.value.slice(0, 100);
    clearTimeout(filterTimer);
    filterTimer = setTimeout(ask, 200);
  }

  let resizeTimer = null;
  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    // The skip link moves the focus to the page, not the route: "#main" is no page (it showed the Overview).
    document.querySelector('.skip').addEventListener('click', (event) => {
      event.preventDefault();
      $('main').focus();
    });
    for (const input of document.querySelectorAll('input[data-filter]')) input.addEventListener('input', filtered);
    window.addEventListener('hashchange', route);
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(resizeCharts, 150);
    });
    state.route = parseRoute();
    start();
  });
})();
