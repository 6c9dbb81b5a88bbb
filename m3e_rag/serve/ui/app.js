// The m3e-rag retrieval playground (served at /ui by `m3e-rag serve`).
//
// Rules this file keeps:
// - Index data (chunk text, file names, metadata, error messages) only ever reaches the page as
//   text: element.textContent and text nodes, never innerHTML. Highlighting splits a text into
//   text nodes and <mark> elements.
// - Nothing inline: the page runs under `script-src 'self'; style-src 'self'` (see routes/ui.py).
// - The API key, when the server asks for one (401), is kept in sessionStorage (this tab only)
//   and sent as `Authorization: Bearer KEY`.
(() => {
  'use strict';

  const KEY_STORE = 'm3e-rag-api-key';
  const MODES = ['dense', 'sparse', 'hybrid'];
  const SCORE_LABELS = { dense: 'cosine', sparse: 'BM25', hybrid: 'fused' };
  // A fused (or reranked) hit keeps the scores it had on each side: shown beside its score, not as metadata.
  const SCORE_PARTS = [['dense_score', 'cosine'], ['sparse_score', 'BM25']];
  const SHOWN_KEYS = new Set(['source', 'start', 'end', 'chunk_index', 'n_tokens', 'dense_score', 'sparse_score']);
  const BADGE_COLOURS = 8;
  const state = { info: null, searches: 0, seq: 0, last: null };

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setState(name) {
    document.body.dataset.state = name;
  }

  function status(text, isError) {
    const node = $('status');
    node.textContent = text;
    node.classList.toggle('error', Boolean(isError));
  }

  class ApiError extends Error {
    constructor(httpStatus, message) {
      super(message);
      this.httpStatus = httpStatus;
    }
  }

  // ------------------------------------------------------------------ HTTP
  async function api(path, body) {
    const headers = {};
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.Authorization = 'Bearer ' + key;
    const init = { method: body === undefined ? 'GET' : 'POST', headers, credentials: 'omit', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try {
      data = await resp.json();
    } catch (err) {
      data = null;
    }
    if (resp.status === 401) {
      askKey(key ? 'The server refused this key; enter the right one.' : '');
      throw new ApiError(401, 'This server needs an API key: enter it above.');
    }
    if (!resp.ok) {
      const message = data && data.error && data.error.message ? data.error.message : 'HTTP ' + resp.status;
      throw new ApiError(resp.status, message);
    }
    return data;
  }

  function askKey(message) {
    sessionStorage.removeItem(KEY_STORE);
    $('auth').hidden = false;
    $('auth-message').textContent = message;
    setState('auth');
    $('api-key').focus();
  }

  function saveKey() {
    const key = $('api-key').value.trim();
    if (!key) {
      $('auth-message').textContent = 'Enter the key the server was started with (--api-key).';
      return;
    }
    sessionStorage.setItem(KEY_STORE, key);
    $('api-key').value = '';
    $('auth').hidden = true;
    loadIndex().then(() => {
      if (state.last) runSearch();
    });
  }

  // ------------------------------------------------------------ the index
  async function loadHealth() {
    const pill = $('health');
    try {
      const resp = await fetch('/health', { cache: 'no-store', credentials: 'omit' });
      const data = await resp.json();
      pill.textContent = data.status === 'ok' ? 'healthy' : data.status + (data.error ? ': ' + data.error : '');
      pill.className = 'pill ' + (data.status === 'ok' ? 'ok' : 'bad');
    } catch (err) {
      pill.textContent = 'unreachable';
      pill.className = 'pill bad';
    }
  }

  function addFact(list, name, value) {
    list.appendChild(el('dt', null, name));
    list.appendChild(el('dd', null, value));
  }

  async function loadIndex() {
    const list = $('index-info');
    const sources = $('sources');
    try {
      const info = await api('/v1/index');
      state.info = info;
      list.replaceChildren();
      addFact(list, 'model', info.model);
      const built = String(info.index_model || '');
      if (built && built.split(/[\\/]/).pop() !== info.model) addFact(list, 'index built with', built);
      addFact(list, 'dimensions', info.dim);
      addFact(list, 'window', info.window + ' tokens');
      const chunker = info.chunker || {};
      const settings = Number.isInteger(chunker.max_tokens)
        ? chunker.max_tokens + ' tokens, overlap ' + chunker.overlap_tokens
          + (chunker.chunker_version !== undefined ? ' (chunker v' + chunker.chunker_version + ')' : '')
        : Object.keys(chunker).map((k) => k + ' ' + chunker[k]).join(', ');
      addFact(list, 'chunking', settings || 'not recorded');
      addFact(list, 'chunks', info.chunks);
      addFact(list, 'sources', info.sources);
      addFact(list, 'collection', info.collection);
      addFact(list, 'BM25 (sparse, hybrid)', info.sparse ? 'yes' : 'no');
      addFact(list, 'reranker', info.reranker || 'none');
      sources.replaceChildren();
      for (const name of info.source_names) sources.appendChild(el('li', null, name));
      if (info.sources > info.source_names.length) {
        sources.appendChild(el('li', 'note', '… and ' + (info.sources - info.source_names.length) + ' more'));
      }
      const rerank = $('rerank');
      rerank.disabled = !info.reranker;
      $('rerank-label').title = info.reranker ? 'reorder with ' + info.reranker
        : 'no reranker on this server (start it with --reranker MODEL)';
      $('k').max = String(info.max_k);
      setState('ready');
    } catch (err) {
      if (err.httpStatus !== 401) {
        list.replaceChildren();
        addFact(list, 'unavailable', err.message);
        setState('ready');
      }
    }
  }

  // --------------------------------------------------------------- search
  function readJson(value, what, example) {
    let parsed;
    try {
      parsed = JSON.parse(value);
    } catch (err) {
      throw new Error(what + ' is not valid JSON (' + err.message + '); write it like ' + example + '.');
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new Error(what + ' must be a JSON object, such as ' + example + '.');
    }
    return parsed;
  }

  function readForm() {
    const query = $('query').value;
    if (!query.trim()) throw new Error('Type a query first.');
    const k = Number($('k').value);
    const maxK = state.info ? state.info.max_k : 1000;
    if (!Number.isInteger(k) || k < 1 || k > maxK) throw new Error('k must be a whole number from 1 to ' + maxK + '.');
    const form = { query, k, rerank: $('rerank').checked };
    const where = $('where').value.trim();
    if (where) form.where = readJson(where, 'The metadata filter', '{"lang": "zh"}');
    const doc = $('where-doc').value.trim();
    if (doc) {
      form.where_document = doc.startsWith('{')
        ? readJson(doc, 'The document filter', '{"$contains": "熊猫"}') : { $contains: doc };
    }
    return form;
  }

  async function search(form, mode) {
    const body = { query: form.query, k: form.k, mode };
    if (form.where) body.where = form.where;
    if (form.where_document) body.where_document = form.where_document;
    if (form.rerank) body.rerank = true;
    const data = await api('/v1/search', body);
    return { mode, rerank: form.rerank, hits: data.data };
  }

  async function runSearch() {
    let form;
    try {
      form = readForm();
    } catch (err) {
      status(err.message, true);
      return;
    }
    state.last = form;
    state.searches += 1;
    document.body.dataset.searches = String(state.searches);
    const seq = ++state.seq;
    const compare = $('compare').checked;
    const modes = compare ? MODES : [$('mode').value];
    setState('busy');
    status('Searching…', false);
    const started = performance.now();
    try {
      const termsCall = api('/v1/terms', { query: form.query }).then((d) => d.terms, () => []);
      const [terms, ...columns] = await Promise.all([termsCall, ...modes.map((m) => search(form, m))]);
      if (seq !== state.seq) return; // a newer search has started
      renderResults(columns, terms, compare);
      const n = columns.reduce((sum, c) => sum + c.hits.length, 0);
      status(n + ' hit' + (n === 1 ? '' : 's') + ' in ' + Math.round(performance.now() - started) + ' ms', false);
      setState('done');
    } catch (err) {
      if (seq !== state.seq) return;
      $('results').replaceChildren();
      status(err.message, true);
      setState('error');
    }
  }

  // ------------------------------------------------------------ rendering
  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }

  // Appends `text` to `parent` as text nodes, with each occurrence of a term in a <mark>.
  function highlight(parent, text, terms) {
    const usable = (terms || []).filter((t) => t && t.trim()).sort((a, b) => b.length - a.length);
    if (!usable.length) {
      parent.appendChild(document.createTextNode(text));
      return;
    }
    const pattern = new RegExp(usable.map(escapeRegExp).join('|'), 'giu');
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      parent.appendChild(el('mark', null, match[0]));
      last = match.index + match[0].length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  // Chunk ids found in more than one column get the same letter badge in each.
  function sharedBadges(columns) {
    const seen = new Map();
    const longest = Math.max(0, ...columns.map((c) => c.hits.length));
    for (let rank = 0; rank < longest; rank += 1) {
      for (const column of columns) {
        const hit = column.hits[rank];
        if (hit) seen.set(hit.id, (seen.get(hit.id) || 0) + 1);
      }
    }
    const badges = new Map();
    for (let rank = 0; rank < longest; rank += 1) {
      for (const column of columns) {
        const hit = column.hits[rank];
        if (hit && seen.get(hit.id) > 1 && !badges.has(hit.id)) badges.set(hit.id, badges.size);
      }
    }
    return badges;
  }

  function badgeName(n) {
    return n < 26 ? String.fromCharCode(65 + n) : String(n + 1);
  }

  function renderHit(hit, rank, column, terms, badges) {
    const meta = hit.metadata || {};
    const item = el('li', 'hit');
    item.dataset.id = hit.id;
    const head = el('div', 'hit-head');
    head.appendChild(el('span', 'rank', '#' + rank));
    const label = column.rerank ? 'rerank' : SCORE_LABELS[column.mode];
    const score = el('span', 'score', label + ' ' + Number(hit.score).toFixed(4));
    score.dataset.label = label;
    head.appendChild(score);
    const parts = SCORE_PARTS.filter(([key]) => typeof meta[key] === 'number')
      .map(([key, name]) => name + ' ' + meta[key].toFixed(4));
    if (parts.length && (column.mode === 'hybrid' || column.rerank)) {
      head.appendChild(el('span', 'parts', '(' + parts.join(' · ') + ')'));
    }
    if (badges && badges.has(hit.id)) {
      const n = badges.get(hit.id);
      const badge = el('span', 'badge b' + (n % BADGE_COLOURS), badgeName(n));
      badge.title = 'the same chunk appears in other columns with this badge';
      head.appendChild(badge);
    }
    head.appendChild(el('span', 'source', meta.source !== undefined ? meta.source : '(no source)'));
    if (Number.isInteger(meta.start) && Number.isInteger(meta.end)) {
      const where = 'chars ' + meta.start + '–' + meta.end
        + (Number.isInteger(meta.chunk_index) ? ' · chunk ' + meta.chunk_index : '');
      head.appendChild(el('span', 'span', where));
    }
    item.appendChild(head);
    const text = el('p', 'text');
    highlight(text, hit.text, terms);
    item.appendChild(text);
    const extra = Object.keys(meta).filter((k) => !SHOWN_KEYS.has(k));
    if (extra.length) {
      const list = el('dl', 'meta');
      for (const key of extra) {
        list.appendChild(el('dt', null, key));
        list.appendChild(el('dd', null, typeof meta[key] === 'string' ? meta[key] : JSON.stringify(meta[key])));
      }
      item.appendChild(list);
    }
    const context = el('button', 'context-link', 'Show in context');
    context.type = 'button';
    context.addEventListener('click', () => openNeighbours(hit, terms));
    item.appendChild(context);
    return item;
  }

  function renderResults(columns, terms, compare) {
    const results = $('results');
    results.replaceChildren();
    results.classList.toggle('columns', compare);
    const badges = compare ? sharedBadges(columns) : null;
    for (const column of columns) {
      const box = el('section', 'column');
      box.dataset.mode = column.mode;
      box.appendChild(el('h2', null, column.mode + (column.rerank ? ' + rerank' : '')));
      if (!column.hits.length) box.appendChild(el('p', 'note', 'No hits (check the filters).'));
      const list = el('ol', 'hits');
      column.hits.forEach((hit, i) => list.appendChild(renderHit(hit, i + 1, column, terms, badges)));
      box.appendChild(list);
      results.appendChild(box);
    }
  }

  // ----------------------------------------------------------- neighbours
  // The stored chunks may overlap: lay them out by character span and cut the covered text into
  // pieces before, inside and after the hit's span; a hole between chunks shows as a gap.
  function stitch(chunks, hit) {
    const spans = chunks.every((c) => Number.isInteger(c.start) && Number.isInteger(c.end)
      && Array.from(c.text).length === c.end - c.start);
    if (!spans || !Number.isInteger(hit.start)) {
      return chunks.map((c) => ({ text: c.text, hit: c.id === hit.id, gap: false }));
    }
    const pieces = [];
    let cursor = null;
    for (const chunk of [...chunks].sort((a, b) => a.start - b.start)) {
      const from = cursor === null ? chunk.start : Math.max(cursor, chunk.start);
      if (cursor !== null && chunk.start > cursor) pieces.push({ text: '', hit: false, gap: true });
      if (chunk.end <= from) continue;
      const part = Array.from(chunk.text).slice(from - chunk.start);
      const end = from + part.length;
      const clamp = (x) => Math.min(end, Math.max(from, x));
      const cuts = [from, clamp(hit.start), clamp(hit.end), end];
      for (let i = 0; i < 3; i += 1) {
        if (cuts[i + 1] > cuts[i]) {
          pieces.push({ text: part.slice(cuts[i] - from, cuts[i + 1] - from).join(''), hit: i === 1, gap: false });
        }
      }
      cursor = cursor === null ? chunk.end : Math.max(cursor, chunk.end);
    }
    return pieces;
  }

  async function openNeighbours(hit, terms) {
    const panel = $('neighbours');
    const box = $('neighbours-text');
    box.replaceChildren();
    $('neighbours-source').textContent = 'Loading…';
    panel.hidden = false;
    try {
      const data = await api('/v1/neighbours', { id: hit.id, around: 2 });
      const own = data.chunks.find((c) => c.id === data.id) || { id: data.id };
      const first = data.chunks.length ? data.chunks[0].chunk_index : null;
      const last = data.chunks.length ? data.chunks[data.chunks.length - 1].chunk_index : null;
      $('neighbours-source').textContent = (data.source !== null ? data.source : '(no source)')
        + (first !== null && first !== undefined ? ' · chunks ' + first + '–' + last : '');
      for (const piece of stitch(data.chunks, own)) {
        if (piece.gap) {
          box.appendChild(el('span', 'gap', ' … '));
          continue;
        }
        const node = el(piece.hit ? 'mark' : 'span', piece.hit ? 'hit-span' : null);
        highlight(node, piece.text, terms);
        box.appendChild(node);
      }
      const target = box.querySelector('.hit-span');
      if (target) target.scrollIntoView({ block: 'center' });
    } catch (err) {
      $('neighbours-source').textContent = err.message;
    }
  }

  function closeNeighbours() {
    $('neighbours').hidden = true;
  }

  // ---------------------------------------------------------------- wiring
  function start() {
    $('query').addEventListener('keydown', (event) => {
      // Enter confirms a Chinese input method's candidate while composing: search only after it.
      if (event.key === 'Enter' && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        runSearch();
      }
    });
    $('search').addEventListener('click', runSearch);
    $('mode').addEventListener('change', () => { if (state.last) runSearch(); });
    $('compare').addEventListener('change', () => { if (state.last) runSearch(); });
    $('api-key-save').addEventListener('click', saveKey);
    $('api-key').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.isComposing) saveKey();
    });
    $('neighbours-close').addEventListener('click', closeNeighbours);
    $('neighbours').addEventListener('click', (event) => {
      if (event.target === $('neighbours')) closeNeighbours();
    });
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') closeNeighbours();
    });
    document.body.dataset.searches = '0';
    loadHealth();
    loadIndex();
    $('query').focus();
  }

  start();
})();
