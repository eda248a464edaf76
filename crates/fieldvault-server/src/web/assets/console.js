// Fieldvault console: plain JavaScript, no framework, no build step, loaded with `defer` from the
// server itself (the Content-Security-Policy allows nothing inline). Every action is a call to the
// JSON API with the browser session cookie and, for changes, the session's CSRF token; the server
// decides everything, the page shows its answers (errors as status, code and message).
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const csrf = () => ($('meta[name="fv-csrf"]') || {}).content || '';
  const ctx = () => ($('#ctx') || document.body).dataset;
  const enc = encodeURIComponent;

  class Problem extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    toString() {
      return `${this.status} ${this.code}: ${this.message}`;
    }
  }

  // One API call. JSON bodies are sent as JSON, Blobs as they are. Errors throw a Problem built
  // from the API's problem JSON (`code`, `message`; KoboToolbox routes add `detail` or field keys).
  async function api(method, path, body, contentType) {
    const headers = { 'X-Fieldvault-Console': '1', Accept: 'application/json' };
    if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf();
    let payload;
    if (body instanceof Blob) {
      payload = body;
      headers['Content-Type'] = contentType || body.type || 'application/octet-stream';
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
    } catch (e) {
      throw new Problem(0, 'network', 'The server could not be reached.');
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = text;
    }
    if (!resp.ok) {
      let code = 'http';
      let message = resp.statusText || 'request failed';
      if (data && typeof data === 'object') {
        code = data.code || code;
        message = data.message || data.detail ||
          Object.entries(data).map(([k, v]) => `${k}: ${v}`).join('; ') || message;
      } else if (typeof data === 'string' && data) {
        message = data.slice(0, 300);
      }
      if (resp.status === 401 && code === 'auth.session_expired') {
        message += ' (reload the page to sign in again)';
      }
      throw new Problem(resp.status, code, message);
    }
    return data;
  }

  // Builds an element; strings become text nodes (never HTML).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function problemBox(scope) {
    return scope && (scope.matches && scope.matches('.problem') ? scope : $('.problem', scope));
  }
  function showProblem(scope, err) {
    const box = problemBox(scope);
    const text = err instanceof Problem ? err.toString() : String(err && err.message || err);
    if (box) {
      box.textContent = text;
      box.hidden = false;
    } else {
      window.alert(text);
    }
  }
  function clearProblem(scope) {
    const box = problemBox(scope);
    if (box) box.hidden = true;
    const ok = scope && $('.ok', scope);
    if (ok) ok.hidden = true;
  }
  function showOk(scope, text) {
    const ok = $('.ok', scope);
    if (ok) {
      ok.textContent = text;
      ok.hidden = false;
    }
  }

  // A form handler that clears and shows problems and disables the button while it runs.
  function onSubmit(form, fn) {
    if (!form) return;
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearProblem(form);
      const buttons = $$('button[type="submit"]', form);
      buttons.forEach((b) => { b.disabled = true; });
      try {
        await fn(form);
      } catch (e) {
        showProblem(form, e);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    });
  }

  function when(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  function svgDataUrl(svg) {
    return 'data:image/svg+xml;base64,' + btoa(unescape(encodeURIComponent(svg)));
  }

  // Secrets in links (invite and reset codes) travel in the fragment, which browsers never send
  // to the server, so they stay out of access logs; `?name=` is accepted too.
  function fragmentParam(name) {
    return new URLSearchParams(location.hash.slice(1)).get(name) || new URLSearchParams(location.search).get(name);
  }

  function safeNext() {
    const n = new URLSearchParams(location.search).get('next') || '';
    return n.startsWith('/console/') && !n.startsWith('//') && !n.includes('\\') ? n : '/console/projects';
  }

  // ---- live password strength (the server's own evaluation; it judges again on submit) ----
  const STRENGTH = ['very weak', 'weak', 'fair', 'strong', 'very strong'];
  function bindMeter(box) {
    const input = document.getElementById(box.dataset.meterFor);
    if (!input) return;
    const form = input.form;
    const meter = $('meter', box);
    const label = $('.meter-label', box);
    const warning = $('.meter-warning', box);
    const suggestions = $('.meter-suggestions', box);
    const unmet = $('.meter-unmet', box);
    const nameField = form && ($('#signup-username', form) || $('#new-username', form));
    const emailField = form && ($('#signup-email', form) || $('#new-email', form));
    let timer = null;
    let seq = 0;
    const render = (r) => {
      meter.value = r.score;
      box.dataset.score = String(r.score);
      box.dataset.acceptable = String(r.acceptable);
      label.textContent = `Strength: ${STRENGTH[r.score] || r.score} (${r.score} of 4, ${r.minScore} needed) — ` +
        (r.acceptable ? 'meets the policy' : 'does not meet the policy yet');
      warning.textContent = r.warning || '';
      warning.hidden = !r.warning;
      suggestions.replaceChildren(...(r.suggestions || []).map((s) => el('li', { text: s })));
      unmet.replaceChildren(...(r.unmet || []).map((s) => el('li', { text: `Not met: ${s}` })));
    };
    const update = async () => {
      const mine = ++seq;
      if (!input.value) {
        meter.value = 0;
        delete box.dataset.score;
        label.textContent = 'Strength: type a password';
        warning.hidden = true;
        suggestions.replaceChildren();
        unmet.replaceChildren();
        return;
      }
      try {
        const body = {
          password: input.value,
          username: nameField ? nameField.value : (document.body.dataset.username || ''),
        };
        if (emailField && emailField.value) body.email = emailField.value;
        const r = await api('POST', '/v1/password-strength', body);
        if (mine === seq) render(r);
      } catch (e) {
        label.textContent = `Strength could not be checked (${e}).`;
      }
    };
    const schedule = () => {
      clearTimeout(timer);
      timer = setTimeout(update, 150);
    };
    input.addEventListener('input', schedule);
    if (nameField) nameField.addEventListener('input', () => { if (input.value) schedule(); });
  }

  // ---- audit log, read in pages (administrators) ----
  async function auditEntries(maxPages = 50) {
    let after = 0;
    let all = [];
    for (let i = 0; i < maxPages; i++) {
      const page = await api('GET', `/v1/audits?after=${after}&limit=1000`);
      all = all.concat(page);
      if (page.length < 1000) break;
      after = page[page.length - 1].seq;
    }
    return all;
  }
  function auditRows(tbody, entries, withSeq) {
    tbody.replaceChildren(...entries.map((a) => el('tr', {},
      withSeq ? el('td', { text: String(a.seq) }) : null,
      el('td', { text: when(a.loggedAt) }),
      el('td', { text: a.actor || '' }),
      el('td', {}, el('code', { text: a.action })),
      el('td', { text: a.target || '' }))));
    if (!entries.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: withSeq ? 5 : 4, text: 'Nothing yet.' })));
  }

  // ---- pages ----
  const pages = {};

  pages.login = () => {
    const form = $('#login-form');
    $('#login-username').focus();
    onSubmit(form, async () => {
      const body = { email: $('#login-username').value, password: $('#login-password').value, cookie: true };
      const step = $('#login-code-step');
      if (!step.hidden && $('#login-code').value) body.code = $('#login-code').value.trim();
      try {
        await api('POST', '/v1/sessions', body);
        location.assign(safeNext());
      } catch (e) {
        if (e.code === 'auth.second_factor_required') {
          step.hidden = false;
          $('#login-code').focus();
          throw new Problem(e.status, e.code, 'Enter the code from your authenticator app, then log in again.');
        }
        throw e;
      }
    });
  };

  pages.signup = () => {
    const invite = fragmentParam('invite');
    if (invite) $('#signup-invite').value = invite;
    onSubmit($('#signup-form'), async () => {
      const username = $('#signup-username').value.trim();
      const password = $('#signup-password').value;
      const body = { username, password };
      if ($('#signup-email').value.trim()) body.email = $('#signup-email').value.trim();
      if ($('#signup-invite').value.trim()) body.invite = $('#signup-invite').value.trim();
      await api('POST', '/v1/signup', body);
      try {
        await api('POST', '/v1/sessions', { email: username, password, cookie: true });
        location.assign('/console/account');
      } catch (e) {
        location.assign('/console/login');
      }
    });
  };

  pages.reset = () => {
    const token = fragmentParam('token');
    if (token) $('#reset-token').value = token;
    onSubmit($('#reset-form'), async (form) => {
      await api('POST', '/v1/password-reset', { token: $('#reset-token').value.trim(), password: $('#reset-password').value });
      form.replaceChildren(el('p', { class: 'ok', role: 'status', text: 'Your password is set. ' },
        el('a', { href: '/console/login', text: 'Log in' })));
    });
  };

  pages.account = () => {
    onSubmit($('#password-form'), async (form) => {
      await api('POST', '/v1/users/current/password', { password: $('#pw-current').value, newPassword: $('#pw-new').value });
      form.reset();
      showOk(form, 'Password changed. Your other sessions were signed out.');
    });

    const start = $('#tfa-start');
    if (start) {
      start.addEventListener('click', async () => {
        clearProblem($('#tfa-confirm-form'));
        try {
          const r = await api('POST', '/v1/users/current/2fa');
          $('#tfa-qr').src = svgDataUrl(r.qrSvg);
          $('#tfa-secret').textContent = r.secret;
          $('#tfa-enrol').hidden = false;
          start.hidden = true;
          $('#tfa-code').focus();
        } catch (e) {
          showProblem($('#tfa-confirm-form'), e);
          $('#tfa-enrol').hidden = false;
        }
      });
      onSubmit($('#tfa-confirm-form'), async () => {
        const r = await api('POST', '/v1/users/current/2fa/confirm', { code: $('#tfa-code').value.trim() });
        $('#tfa-enrol').hidden = true;
        $('#tfa-recovery-codes').replaceChildren(...r.recoveryCodes.map((c) => el('li', {}, el('code', { text: c }))));
        $('#tfa-recovery').hidden = false;
        $('#tfa-status').textContent = 'On. Sign-in asks for a code from your authenticator app.';
        $('#two-factor').dataset.enabled = 'true';
      });
    }

    // Notices (e.g. an automatic restriction of one of this account's tokens), newest first.
    const notices = async () => {
      const list = $('#notice-list');
      const box = $('#notices');
      try {
        const ns = await api('GET', '/v1/users/current/notices');
        list.replaceChildren(...ns.map((n) => el('li', { class: n.readAt ? 'notice read' : 'notice unread', dataset: { kind: n.kind } },
          el('strong', { text: n.readAt ? 'Read' : 'New' }), ` ${when(n.createdAt)}: `, n.message,
          ' ', el('code', { text: n.kind }))));
        if (!ns.length) list.replaceChildren(el('li', { text: 'No notices.' }));
        $('#notices-read').hidden = !ns.some((n) => !n.readAt);
      } catch (e) { showProblem(box, e); }
    };
    notices();
    $('#notices-read').addEventListener('click', async () => {
      clearProblem($('#notices'));
      try {
        await api('POST', '/v1/users/current/notices/read');
        await notices();
      } catch (e) { showProblem($('#notices'), e); }
    });

    const tokens = async () => {
      const tbody = $('#token-table tbody');
      try {
        const list = await api('GET', '/v1/tokens');
        tbody.replaceChildren(...list.map((t) => el('tr', {},
          el('td', { text: t.name }),
          el('td', { text: t.scopes.join(' ') }),
          el('td', { text: t.expiresAt ? when(t.expiresAt) : 'never' }),
          el('td', { text: t.lastUsedAt ? `${when(t.lastUsedAt)} from ${t.lastUsedIp || '?'}` : 'never' }),
          el('td', { class: t.revokedAt ? 'state-revoked' : 'state-active', text: t.revokedAt ? 'revoked' : 'active' }),
          el('td', {}, t.revokedAt ? null : el('button', {
            type: 'button', class: 'secondary small', 'aria-label': `Revoke token ${t.name}`, text: 'Revoke',
            on: { click: async () => {
              try {
                await api('DELETE', `/v1/tokens/${t.id}`);
                await tokens();
              } catch (e) { showProblem($('#token-form'), e); }
            } },
          })))));
        if (!list.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: 6, text: 'No tokens yet.' })));
      } catch (e) { showProblem($('#token-form'), e); }
    };
    tokens();
    onSubmit($('#token-form'), async (form) => {
      const scopes = $$('input[name="scope"]:checked', form).map((c) => c.value);
      const body = { name: $('#token-name').value.trim(), scopes };
      const day = $('#token-expiry').value;
      if (day) body.expiresAt = Date.parse(`${day}T23:59:59Z`);
      const t = await api('POST', '/v1/tokens', body);
      $('#token-value').textContent = t.token;
      $('#token-created').hidden = false;
      $('#token-name').value = '';
      await tokens();
    });

    const sessionList = async () => {
      const tbody = $('#session-table tbody');
      try {
        const list = await api('GET', '/v1/users/current/sessions');
        tbody.replaceChildren(...list.map((s) => el('tr', { 'data-session-id': String(s.id) },
          el('td', { text: `${s.browser ? 'Browser' : 'Script (bearer)'}${s.current ? ' — this one' : ''}` }),
          el('td', { text: when(s.createdAt) }),
          el('td', { text: when(s.lastSeenAt) }),
          el('td', { text: when(s.expiresAt) }),
          el('td', {}, s.current ? null : el('button', {
            type: 'button', class: 'secondary small', 'aria-label': `End session ${s.id}`, text: 'End',
            on: { click: async () => {
              try {
                await api('DELETE', `/v1/users/current/sessions/${s.id}`);
                await sessionList();
              } catch (e) { showProblem($('#logout-all').parentElement, e); }
            } },
          })))));
      } catch (e) { showProblem($('#logout-all').parentElement, e); }
    };
    (async () => {
      try {
        const s = await api('GET', '/v1/sessions/current');
        $('#session-created').textContent = when(s.createdAt);
        $('#session-expires').textContent = when(s.expiresAt);
      } catch (e) { showProblem($('#logout-all').parentElement, e); }
      await sessionList();
    })();
    $('#logout-all').addEventListener('click', async (ev) => {
      try {
        await api('POST', '/v1/sessions/current/logout-all');
        location.assign('/console/login');
      } catch (e) { showProblem(ev.target.parentElement, e); }
    });
  };

  pages.projects = () => {
    const list = $('#project-list');
    (async () => {
      try {
        const ps = await api('GET', '/v1/projects');
        list.replaceChildren(...ps.map((p) => el('li', {},
          el('a', { href: `/console/projects/${p.id}`, text: p.name }),
          p.description ? ` — ${p.description}` : '')));
        if (!ps.length) list.replaceChildren(el('li', { text: 'No projects yet. Create one below.' }));
      } catch (e) { showProblem(list.parentElement, e); }
    })();
    onSubmit($('#project-form'), async () => {
      const body = { name: $('#project-name').value.trim() };
      if ($('#project-description').value.trim()) body.description = $('#project-description').value.trim();
      const p = await api('POST', '/v1/projects', body);
      location.assign(`/console/projects/${p.id}`);
    });
  };

  pages.project = () => {
    const pid = ctx().projectId;
    const base = `/v1/projects/${pid}`;
    let forms = [];

    const loadForms = async () => {
      const tbody = $('#form-table tbody');
      try {
        forms = await api('GET', `${base}/forms`);
      } catch (e) {
        showProblem($('#forms-problem'), e);
        return;
      }
      const action = (label, fn, cls) => el('button', {
        type: 'button', class: cls || 'secondary small', text: label,
        on: { click: async () => {
          $('#forms-problem').hidden = true;
          try {
            await fn();
            await loadForms();
          } catch (e) { showProblem($('#forms-problem'), e); }
        } },
      });
      tbody.replaceChildren(...forms.map((f) => el('tr', {},
        el('td', {}, el('a', { href: `/console/projects/${pid}/forms/${enc(f.xmlFormId)}`, text: f.name || f.xmlFormId })),
        el('td', {}, el('code', { text: f.xmlFormId })),
        el('td', { text: f.version || '—' }),
        el('td', { text: f.state }),
        el('td', { text: f.publishedAt ? when(f.publishedAt) : 'draft only' }),
        el('td', {}, el('div', { class: 'actions' },
          action('Publish draft', () => api('POST', `${base}/forms/${enc(f.xmlFormId)}/draft/publish`)),
          f.state === 'closed'
            ? action('Reopen', () => api('PATCH', `${base}/forms/${enc(f.xmlFormId)}`, { state: 'open' }))
            : action('Close', () => api('PATCH', `${base}/forms/${enc(f.xmlFormId)}`, { state: 'closed' })))))));
      if (!forms.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: 6, text: 'No forms yet. Upload one below.' })));
      const target = $('#form-target');
      target.replaceChildren(el('option', { value: '', text: 'a new form' }),
        ...forms.map((f) => el('option', { value: f.xmlFormId, text: `a new version of ${f.name || f.xmlFormId}` })));
      $('#media-form').replaceChildren(...forms.map((f) => el('option', { value: f.xmlFormId, text: f.name || f.xmlFormId })));
      $('#collector-forms').replaceChildren(el('legend', { text: 'Forms it may fill' }),
        ...forms.map((f) => el('label', {}, el('input', { type: 'checkbox', name: 'collector-form', value: f.xmlFormId, checked: true }),
          f.name || f.xmlFormId)));
      await loadCollectors();
    };

    onSubmit($('#form-upload'), async (form) => {
      const file = $('#form-file').files[0];
      if (!file) throw new Problem(400, 'invalid', 'Choose an XForm file first.');
      const publish = $('#form-publish').checked;
      const target = $('#form-target').value;
      const type = file.name.endsWith('.xlsx')
        ? 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet' : 'application/xml';
      if (!target) {
        const f = await api('POST', `${base}/forms?publish=${publish}`, file, type);
        showOk(form, `Uploaded ${f.name || f.xmlFormId}${publish ? ' and published it' : ' as a draft'}.`);
      } else {
        await api('POST', `${base}/forms/${enc(target)}/draft`, file, type);
        if (publish) await api('POST', `${base}/forms/${enc(target)}/draft/publish`);
        showOk(form, `New version of ${target} ${publish ? 'published' : 'saved as a draft'}.`);
      }
      $('#form-file').value = '';
      await loadForms();
    });

    onSubmit($('#media-upload'), async (form) => {
      const file = $('#media-file').files[0];
      const target = $('#media-form').value;
      if (!file || !target) throw new Problem(400, 'invalid', 'Choose a form and a file.');
      await api('POST', `${base}/forms/${enc(target)}/draft/attachments/${enc(file.name)}`, file);
      showOk(form, `${file.name} uploaded to the draft of ${target}; publish the draft to send it to devices.`);
    });

    const loadCollectors = async () => {
      const tbody = $('#collector-table tbody');
      try {
        const users = await api('GET', `${base}/app-users`);
        tbody.replaceChildren(...users.map((u) => {
          const pick = el('select', { 'aria-label': `Form to give ${u.displayName}` },
            ...forms.map((f) => el('option', { value: f.xmlFormId, text: f.name || f.xmlFormId })));
          const row = el('tr', {},
            el('td', { text: u.displayName }),
            el('td', { text: when(u.createdAt) }),
            el('td', { class: u.deletedAt ? 'state-revoked' : 'state-active', text: u.deletedAt ? 'revoked' : 'active' }),
            el('td', {}, u.deletedAt ? null : el('div', { class: 'actions' },
              pick,
              el('button', { type: 'button', class: 'secondary small', text: 'Give form', on: { click: async () => {
                try {
                  await api('POST', `${base}/forms/${enc(pick.value)}/assignments/app-user/${u.id}`);
                  showOk($('#collector-form'), `${u.displayName} may now fill ${pick.value}.`);
                } catch (e) { showProblem($('#collector-form'), e); }
              } } }),
              el('button', { type: 'button', class: 'danger small', 'aria-label': `Revoke ${u.displayName}`, text: 'Revoke', on: { click: async () => {
                try {
                  await api('DELETE', `${base}/app-users/${u.id}`);
                  await loadCollectors();
                } catch (e) { showProblem($('#collector-form'), e); }
              } } }))));
          return row;
        }));
        if (!users.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: 4, text: 'No collectors yet.' })));
      } catch (e) { showProblem($('#collector-form'), e); }
    };

    onSubmit($('#collector-form'), async () => {
      const chosen = $$('input[name="collector-form"]:checked').map((c) => c.value);
      const r = await api('POST', `/console/api/projects/${pid}/collectors`, { displayName: $('#collector-name').value.trim(), forms: chosen });
      const box = $('#collector-qr');
      $('#collector-qr-name').textContent = r.displayName;
      $('#collector-qr-img').src = svgDataUrl(r.qrSvg);
      $('#collector-url').textContent = r.serverUrl;
      $('#collector-payload').textContent = r.qrPayload;
      box.dataset.payload = r.qrPayload;
      box.hidden = false;
      $('#collector-name').value = '';
      await loadCollectors();
      box.scrollIntoView();
    });

    // Who holds which role (GET …/assignments/{role} for each role; managers only).
    const ROLES = [['manager', 'Manager'], ['editor', 'Editor'], ['viewer', 'Viewer'], ['formfill', 'Data collector']];
    const loadRoles = async () => {
      const tbody = $('#role-table tbody');
      $('#roles-problem').hidden = true;
      try {
        const lists = await Promise.all(ROLES.map(([r]) => api('GET', `${base}/assignments/${r}`)));
        const rows = ROLES.flatMap(([role, label], i) => lists[i].map((a) => el('tr', { dataset: { actorId: String(a.id), role } },
          el('td', { text: a.displayName }),
          el('td', { text: String(a.id) }),
          el('td', { text: label }),
          el('td', {}, el('button', {
            type: 'button', class: 'danger small', 'aria-label': `Revoke ${label.toLowerCase()} role of ${a.displayName}`, text: 'Revoke',
            on: { click: async () => {
              $('#roles-problem').hidden = true;
              try {
                await api('DELETE', `${base}/assignments/${role}/${a.id}`);
                await loadRoles();
              } catch (e) { showProblem($('#roles-problem'), e); }
            } },
          })))));
        tbody.replaceChildren(...rows);
        if (!rows.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: 4, text: 'Nobody yet.' })));
      } catch (e) {
        if (e.status === 403) {
          tbody.replaceChildren(el('tr', {}, el('td', { colspan: 4, text: 'Only the project\'s managers see who has a role here.' })));
        } else {
          showProblem($('#roles-problem'), e);
        }
      }
    };
    loadRoles();
    onSubmit($('#share-form'), async (form) => {
      const id = $('#share-user').value.trim();
      const role = $('#share-role').value;
      if (!/^\d+$/.test(id)) throw new Problem(400, 'invalid', 'The account id is a number (shown on that person\'s Account page).');
      await api('POST', `${base}/assignments/${enc(role)}/${id}`);
      showOk(form, `Account ${id} is now ${role} of this project.`);
      $('#share-user').value = '';
      await loadRoles();
    });

    const loadKey = async () => {
      const status = $('#enc-status');
      try {
        const k = await api('GET', `${base}/key`);
        if (k.encrypted && k.current) {
          status.textContent = `Encrypted since ${when(k.current.createdAt)} with key ${k.current.fingerprint}.` +
            (k.keys.length > 1 ? ` ${k.keys.length - 1} earlier key(s).` : '');
          $('#enc-off').hidden = false;
          $('#enc-form button').textContent = 'Replace the key';
        } else {
          status.textContent = 'Not encrypted: the server encrypts data at rest, but can read it.';
          $('#enc-off').hidden = true;
        }
      } catch (e) {
        status.textContent = `Unknown (${e}).`;
      }
    };
    loadKey();
    onSubmit($('#enc-form'), async () => {
      await api('POST', `${base}/key`, { publicKey: $('#enc-key').value.trim() });
      $('#enc-key').value = '';
      await loadKey();
    });
    $('#enc-off').addEventListener('click', async () => {
      try {
        await api('DELETE', `${base}/key`);
        await loadKey();
      } catch (e) { showProblem($('#enc-form'), e); }
    });

    const history = $('#history-table tbody');
    if (history) {
      (async () => {
        // Managers read the project's history (GET /v1/projects/{id}/audits); for anyone else
        // the server says 403/404 and the section stays hidden.
        try {
          const entries = await api('GET', `/v1/projects/${pid}/audits?limit=100`);
          auditRows(history, entries, false);
          $('#history-section').hidden = false;
        } catch (e) {
          if (e.status !== 403 && e.status !== 404) {
            $('#history-section').hidden = false;
            showProblem($('#history-table').parentElement.parentElement, e);
          }
        }
      })();
    }
    loadForms();
  };

  pages.form = () => {
    const c = ctx();
    const pid = c.projectId;
    const formId = c.formId;
    const uid = c.assetUid;
    const kobo = `/api/v2/assets/${uid}`;
    const central = `/v1/projects/${pid}/forms/${enc(formId)}`;
    const state = { start: 0, limit: 20, sort: null, dir: 1, filters: {}, selected: new Set(), count: 0 };
    let fields = [];

    const columns = () => ['_id', '_submission_time', ...fields.filter((f) => !f.repeat).slice(0, 12).map((f) => f.path), 'review'];

    const query = () => {
      const parts = Object.entries(state.filters).filter(([, v]) => v !== '').map(([k, v]) => {
        if (k === '_id') return { _id: Number(v) };
        return { [k]: { $regex: v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), $options: 'i' } };
      });
      if (!parts.length) return null;
      return parts.length === 1 ? parts[0] : { $and: parts };
    };

    const head = () => {
      const thead = $('#subs-table thead');
      const sortButton = (col) => {
        const th = el('th', { scope: 'col' });
        if (col === 'review') {
          th.append('Review state');
          return th;
        }
        if (state.sort === col) th.setAttribute('aria-sort', state.dir === 1 ? 'ascending' : 'descending');
        th.append(el('button', { type: 'button', class: 'sort', text: col + (state.sort === col ? (state.dir === 1 ? ' ▲' : ' ▼') : ''),
          on: { click: () => {
            if (state.sort === col) state.dir = -state.dir; else { state.sort = col; state.dir = 1; }
            state.start = 0;
            head();
            load();
          } } }));
        return th;
      };
      const filterCell = (col) => {
        if (col === 'review' || col === '_submission_time') return el('td', {});
        const input = el('input', { class: 'filter', type: 'search', 'aria-label': `Filter ${col}`, value: state.filters[col] || '',
          on: { keydown: (ev) => {
            if (ev.key === 'Enter') {
              ev.preventDefault();
              state.filters[col] = ev.target.value.trim();
              state.start = 0;
              load();
            }
          } } });
        return el('td', {}, input);
      };
      thead.replaceChildren(
        el('tr', {}, el('th', { scope: 'col' }, el('span', { class: 'sr-only', text: 'Select' })), ...columns().map(sortButton),
          el('th', { scope: 'col' }, el('span', { class: 'sr-only', text: 'Open' }))),
        el('tr', { class: 'filters' }, el('td', {}), ...columns().map(filterCell), el('td', {})));
    };

    const load = async () => {
      const tbody = $('#subs-table tbody');
      $('#subs-problem').hidden = true;
      const params = new URLSearchParams({ start: String(state.start), limit: String(state.limit) });
      if (state.sort) params.set('sort', JSON.stringify({ [state.sort]: state.dir }));
      const q = query();
      if (q) params.set('query', JSON.stringify(q));
      try {
        const [page, reviews] = await Promise.all([
          api('GET', `${kobo}/data/?${params}`),
          api('GET', `${central}/submissions?limit=1000`).catch(() => []),
        ]);
        const review = new Map(reviews.map((s) => [s.instanceId, s.reviewState || 'received']));
        state.count = page.count;
        tbody.replaceChildren(...page.results.map((r) => {
          // The submission's stable id is its first instanceID (an edit has a new meta/instanceID).
          const instance = r['meta/rootUuid'] || r['meta/instanceID'] || `uuid:${r._uuid}`;
          const box = el('input', { type: 'checkbox', 'aria-label': `Select submission ${r._id}`, checked: state.selected.has(r._id),
            on: { change: (ev) => { if (ev.target.checked) state.selected.add(r._id); else state.selected.delete(r._id); } } });
          return el('tr', { dataset: { id: String(r._id) } }, el('td', {}, box),
            ...columns().map((col) => {
              if (col === 'review') return el('td', { text: review.get(instance) || 'received' });
              const v = r[col];
              return el('td', { text: v === undefined || v === null ? '' : (typeof v === 'object' ? JSON.stringify(v) : String(v)) });
            }),
            el('td', {}, el('a', { href: `/console/projects/${pid}/forms/${enc(formId)}/submissions/${enc(instance)}`, text: 'Open' })));
        }));
        if (!page.results.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: columns().length + 2, text: 'No submissions match.' })));
        const last = Math.min(state.start + state.limit, state.count);
        $('#subs-count').textContent = `${state.count} submission${state.count === 1 ? '' : 's'}${q ? ' match the filters' : ''}.`;
        $('#subs-page').textContent = state.count ? `${state.start + 1}–${last} of ${state.count}` : '';
        $('#subs-prev').disabled = state.start === 0;
        $('#subs-next').disabled = last >= state.count;
      } catch (e) { showProblem($('#subs-problem'), e); }
    };
    $('#subs-prev').addEventListener('click', () => { state.start = Math.max(0, state.start - state.limit); load(); });
    $('#subs-next').addEventListener('click', () => { state.start += state.limit; load(); });

    onSubmit($('#bulk-delete-form'), async (form) => {
      const ids = Array.from(state.selected);
      if (!ids.length) throw new Problem(400, 'invalid', 'Select submissions in the table first.');
      if (!$('#bulk-delete-confirm').checked) throw new Problem(400, 'invalid', 'Tick the confirmation box first.');
      const r = await api('DELETE', `${kobo}/data/bulk/`, { payload: { submission_ids: ids } });
      state.selected.clear();
      $('#bulk-delete-confirm').checked = false;
      showOk(form, (r && r.detail) || `${ids.length} deleted.`);
      await load();
    });

    // Fields of the form (for the table's columns and the redaction wizard).
    (async () => {
      try {
        const a = await api('GET', `${kobo}/`);
        const versions = (a.deployed_versions && a.deployed_versions.results) || [];
        $('#versions').replaceChildren(...versions.map((v, i) => el('li', {},
          `Published ${when(v.date_deployed)} `, el('code', { text: `md5 ${String(v.content_hash).slice(0, 12)}` }),
          i === 0 ? ' (current)' : '')));
        if (!versions.length) $('#versions').replaceChildren(el('li', { text: 'Not published yet.' }));
        const skip = new Set(['begin_group', 'end_group', 'begin_repeat', 'end_repeat', 'start', 'end', 'today', 'deviceid', 'note']);
        let depth = 0;
        fields = [];
        for (const row of (a.content && a.content.survey) || []) {
          if (row.type === 'begin_repeat') depth++;
          if (row.type === 'end_repeat') depth--;
          if (skip.has(row.type)) continue;
          const path = row.$xpath || row.name;
          if (!path) continue;
          fields.push({ path, repeat: depth > 0, label: (row.label && row.label[0]) || row.name });
        }
      } catch (e) { showProblem($('#subs-problem'), e); }
      head();
      load();
      const box = $('#redact-fields');
      box.replaceChildren(el('legend', { text: '1. Fields to redact' }),
        ...fields.map((f) => el('label', {}, el('input', { type: 'checkbox', name: 'redact-field', value: f.path }),
          f.label && f.label !== f.path ? `${f.label} (${f.path})` : f.path)));
      if (!fields.length) box.append(el('p', { text: 'No fields found.' }));
    })();

    // Exports.
    const exportRows = async () => {
      const tbody = $('#export-table tbody');
      try {
        const list = await api('GET', `${kobo}/exports/`);
        const tasks = list.results || list;
        tbody.replaceChildren(...tasks.map((t) => el('tr', { dataset: { status: t.status } },
          el('td', { text: when(t.date_created) }),
          el('td', { text: (t.data && t.data.type) || '' }),
          el('td', { class: `state-${t.status}`, text: t.status === 'error' ? `error: ${(t.messages && t.messages.error) || ''}` : t.status }),
          el('td', {}, t.status === 'complete' && t.result ? el('a', { href: new URL(t.result, location.href).pathname, download: '', class: 'download', text: 'Download' }) : null))));
        if (!tasks.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: 4, text: 'No exports yet.' })));
        return tasks;
      } catch (e) {
        showProblem($('#export-form'), e);
        return [];
      }
    };
    exportRows();
    onSubmit($('#export-form'), async () => {
      const t = await api('POST', `${kobo}/exports/`, {
        type: $('#export-type').value, fields_from_all_versions: true, group_sep: '/',
        hierarchy_in_labels: false, lang: $('#export-lang').value, multiple_select: 'summary',
      });
      for (let i = 0; i < 120; i++) {
        const tasks = await exportRows();
        const mine = tasks.find((x) => x.uid === t.uid);
        if (!mine || mine.status === 'complete' || mine.status === 'error') break;
        await new Promise((r) => setTimeout(r, 1000));
      }
    });

    // Redaction wizard: preview with a dry run, then confirm.
    let planned = null;
    const plan = () => {
      const fieldsChosen = $$('input[name="redact-field"]:checked').map((x) => x.value);
      if (!fieldsChosen.length) throw new Problem(400, 'invalid', 'Choose at least one field.');
      const which = ($('input[name="redact-scope"]:checked') || {}).value;
      let scope = { all: true };
      if (which === 'selected') {
        if (!state.selected.size) throw new Problem(400, 'invalid', 'Select submissions in the table first.');
        scope = { ids: Array.from(state.selected) };
      } else if (which === 'query') {
        try {
          scope = { query: JSON.parse($('#redact-query').value) };
        } catch (e) {
          throw new Problem(400, 'invalid', 'The query is not valid JSON.');
        }
      }
      return { fields: fieldsChosen, scope, replacement: ($('input[name="redact-replacement"]:checked') || {}).value || 'blank' };
    };
    onSubmit($('#redact-form'), async () => {
      planned = plan();
      const r = await api('POST', `${central}/redactions`, { ...planned, dryRun: true });
      const n = r.count !== undefined ? r.count : r.submissions;
      $('#redact-summary').textContent = `Dry run: ${n} submission(s) in scope; ${r.values} value(s) in ${r.versions} version(s) would be replaced` +
        `, ${r.attachments} file(s) deleted, ${r.skippedEncrypted} encrypted submission(s) skipped, ${r.exportsDeleted} export(s) deleted.`;
      $('#redact-summary').dataset.count = String(n);
      $('#redact-confirm').hidden = false;
      $('#redact-done').hidden = true;
      $('#redact-sure').checked = false;
    });
    $('#redact-run').addEventListener('click', async () => {
      clearProblem($('#redact-form'));
      if (!planned) return;
      if (!$('#redact-sure').checked) {
        showProblem($('#redact-form'), new Problem(400, 'invalid', 'Tick “I understand this is irreversible” first.'));
        return;
      }
      try {
        const r = await api('POST', `${central}/redactions`, { ...planned, dryRun: false });
        const done = $('#redact-done');
        done.textContent = `Redacted: ${r.changedSubmissions} submission(s) changed, ${r.values} value(s) replaced, ${r.attachments} file(s) deleted.`;
        done.hidden = false;
        planned = null;
        await load();
        await exportRows();
      } catch (e) { showProblem($('#redact-form'), e); }
    });
  };

  pages.submission = () => {
    const c = ctx();
    const base = `/v1/projects/${c.projectId}/forms/${enc(c.formId)}/submissions/${enc(c.instanceId)}`;
    const fact = (dt, dd) => [el('dt', { text: dt }), el('dd', { text: dd === null || dd === undefined ? '—' : String(dd) })];
    (async () => {
      try {
        const s = await api('GET', base);
        $('#sub-meta').replaceChildren(
          ...fact('Submitted', when(s.createdAt)),
          ...fact('By', s.submitterName || s.submitterId),
          ...fact('Device', s.deviceId),
          ...fact('Form version', s.formVersion),
          ...fact('Review state', s.reviewState || 'received'),
          ...fact('Edits', s.edits || 0),
          ...fact('Attachments', `${s.attachmentsPresent || 0} of ${s.attachmentsExpected || 0}`));
        $('#review-state').value = s.reviewState || 'received';
        const data = $('#sub-data');
        if (s.data === null) {
          data.replaceChildren(el('dt', { text: 'Encrypted' }), el('dd', { text: 'The server holds only ciphertext for this submission.' }));
        } else {
          data.replaceChildren(...Object.entries(s.data || {}).flatMap(([k, v]) =>
            fact(k, typeof v === 'object' ? JSON.stringify(v) : v)));
        }
      } catch (e) { showProblem($('#sub-problem'), e); }
      // Edit history: every version, newest first (GET …/versions).
      try {
        const versions = await api('GET', `${base}/versions`);
        const hist = versions.map((v, i) => el('li', { class: v.current ? 'version current' : 'version', dataset: { instanceId: v.instanceId } },
          el('strong', { text: i === versions.length - 1 ? 'Received' : 'Edited' }),
          ` ${when(v.createdAt)} by ${v.submitterName || (v.submitterId ? `#${v.submitterId}` : 'unknown')}`,
          v.deviceId ? ` from ${v.deviceId}` : '', ' — ', el('code', { text: v.instanceId }),
          v.formVersion ? ` (form version ${v.formVersion})` : '',
          v.current ? ' — current version' : ''));
        if (versions.length === 1) hist.push(el('li', { text: 'Never edited.' }));
        $('#sub-history').replaceChildren(...hist);
      } catch (e) { showProblem($('#sub-problem'), e); }
      try {
        const atts = await api('GET', `${base}/attachments`);
        $('#sub-attachments').replaceChildren(...atts.map((a) => el('li', {},
          a.exists ? el('a', { href: `${base}/attachments/${enc(a.name)}`, text: a.name }) : `${a.name} (not received yet)`)));
        if (!atts.length) $('#sub-attachments').replaceChildren(el('li', { text: 'None.' }));
      } catch (e) { showProblem($('#sub-problem'), e); }
    })();
    onSubmit($('#review-form'), async (form) => {
      await api('PATCH', base, { reviewState: $('#review-state').value });
      showOk(form, 'Review state saved.');
    });
  };

  pages.admin = () => {
    (async () => {
      try {
        const resp = await fetch('/readyz', { headers: { Accept: 'application/json' } });
        const h = await resp.json();
        $('#health-status').textContent = h.status;
        $('#health-store').textContent = `${h.store.backend}: ${h.store.ok ? 'answering' : 'NOT answering'}`;
        $('#health-blobs').textContent = h.blobs.ok ? 'answering' : 'NOT answering';
        const i = h.intake || {};
        $('#health-intake').textContent = `${i.accepting ? 'accepting submissions' : 'NOT accepting submissions'}; journal ${i.journal}` +
          (i.journal_pending ? `, ${i.journal_pending} waiting (degraded intake)` : '');
      } catch (e) {
        $('#health-status').textContent = `unknown (${e})`;
      }
    })();

    // Every account, 50 a page, filtered by part of a username or e-mail (GET /v1/users?q=).
    const users = { q: '', offset: 0, limit: 50 };
    const loadUsers = async () => {
      const tbody = $('#user-table tbody');
      $('#user-list-problem').hidden = true;
      try {
        const params = new URLSearchParams({ limit: String(users.limit + 1), offset: String(users.offset) });
        if (users.q) params.set('q', users.q);
        const list = await api('GET', `/v1/users?${params}`);
        const more = list.length > users.limit;
        const shown = list.slice(0, users.limit);
        tbody.replaceChildren(...shown.map((u) => el('tr', { dataset: { userId: String(u.id), username: u.displayName } },
          el('td', { text: String(u.id) }),
          el('td', { text: u.displayName }),
          el('td', { text: u.email || '—' }),
          el('td', { text: when(u.createdAt) }),
          el('td', { text: u.superuser ? 'administrator' : 'user' }),
          el('td', { class: u.active ? 'state-active' : 'state-suspended',
            text: (u.active ? 'active' : 'suspended') + (u.mustResetPassword ? ', reset forced' : '') + (u.require2fa ? ', two-factor required' : '') }),
          el('td', {}, el('div', { class: 'actions' },
            el('button', {
              type: 'button', class: u.active ? 'danger small' : 'secondary small',
              'aria-label': `${u.active ? 'Suspend' : 'Reactivate'} ${u.displayName}`, text: u.active ? 'Suspend' : 'Reactivate',
              on: { click: async () => {
                try {
                  await api('POST', `/v1/admin/users/${u.id}/${u.active ? 'suspend' : 'activate'}`);
                  await loadUsers();
                } catch (e) { showProblem($('#user-list-problem'), e); }
              } },
            }),
            el('a', { href: `/console/admin?user=${u.id}#user-card`, 'aria-label': `Manage ${u.displayName}`, text: 'Manage' }))))));
        if (!shown.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: 7, text: users.q ? `No account matches “${users.q}”.` : 'No accounts.' })));
        $('#users-page').textContent = shown.length ? `${users.offset + 1}–${users.offset + shown.length}` : '';
        $('#users-prev').disabled = users.offset === 0;
        $('#users-next').disabled = !more;
      } catch (e) { showProblem($('#user-list-problem'), e); }
    };
    loadUsers();
    onSubmit($('#user-list-form'), async () => {
      users.q = $('#user-list-q').value.trim();
      users.offset = 0;
      await loadUsers();
    });
    $('#users-prev').addEventListener('click', () => { users.offset = Math.max(0, users.offset - users.limit); loadUsers(); });
    $('#users-next').addEventListener('click', () => { users.offset += users.limit; loadUsers(); });

    const card = $('#user-card');
    if (card) {
      const id = card.dataset.userId;
      const actions = {
        suspend: ['POST', `/v1/admin/users/${id}/suspend`],
        activate: ['POST', `/v1/admin/users/${id}/activate`],
        'reset-2fa': ['POST', `/v1/admin/users/${id}/2fa/reset`],
        'require-2fa-on': ['POST', `/v1/admin/users/${id}/require-2fa`],
        'require-2fa-off': ['DELETE', `/v1/admin/users/${id}/require-2fa`],
        'force-reset-on': ['POST', `/v1/admin/users/${id}/force-password-reset`],
        'force-reset-off': ['DELETE', `/v1/admin/users/${id}/force-password-reset`],
        'reset-link': ['POST', `/v1/admin/users/${id}/password-reset`],
      };
      $$('button[data-admin-action]', card).forEach((b) => b.addEventListener('click', async () => {
        clearProblem(card);
        const [method, path] = actions[b.dataset.adminAction];
        try {
          const r = await api(method, path);
          if (b.dataset.adminAction === 'reset-link') {
            const link = $('#reset-link');
            link.replaceChildren(el('strong', { text: 'Give this link to the person (shown once): ' }),
              el('code', { text: `${location.origin}/console/reset#token=${enc(r.token)}` }));
            link.hidden = false;
          } else {
            location.reload();
          }
        } catch (e) { showProblem(card, e); }
      }));
    }

    // Automatic rate-limit restrictions, with a Lift button for those in force.
    const restrictions = async () => {
      const box = $('#restrictions');
      const tbody = $('#restriction-table tbody');
      try {
        const list = await api('GET', '/v1/admin/restrictions');
        tbody.replaceChildren(...list.map((r) => el('tr', { dataset: { id: String(r.id), subject: r.subject, active: String(r.active) } },
          el('td', {}, el('code', { text: r.subject })),
          el('td', { text: r.mode }),
          el('td', { text: when(r.createdAt) }),
          el('td', { text: r.reason }),
          el('td', { class: r.active ? 'state-revoked' : 'state-active',
            text: r.active ? 'in force' : `lifted ${when(r.liftedAt)}${r.liftedBy ? ` by ${r.liftedBy}` : ''}` }),
          el('td', {}, r.active ? el('button', {
            type: 'button', class: 'secondary small', 'aria-label': `Lift the restriction of ${r.subject}`, text: 'Lift',
            on: { click: async () => {
              clearProblem(box);
              try {
                await api('POST', `/v1/admin/restrictions/${r.id}/lift`);
                showOk(box, `Lifted the restriction of ${r.subject}.`);
                await restrictions();
              } catch (e) { showProblem(box, e); }
            } },
          }) : null))));
        if (!list.length) tbody.replaceChildren(el('tr', {}, el('td', { colspan: 6, text: 'No restrictions.' })));
      } catch (e) { showProblem(box, e); }
    };
    restrictions();

    onSubmit($('#user-create'), async (form) => {
      const body = { username: $('#new-username').value.trim(), password: $('#new-password').value, superuser: $('#new-superuser').checked };
      if ($('#new-email').value.trim()) body.email = $('#new-email').value.trim();
      const u = await api('POST', '/v1/users', body);
      form.reset();
      showOk(form, `Created ${u.displayName} (id ${u.id}).`);
    });

    onSubmit($('#invite-form'), async () => {
      const body = { expiresInSecs: Math.round(Number($('#invite-days').value || 7) * 86400) };
      if ($('#invite-username').value.trim()) body.username = $('#invite-username').value.trim();
      const r = await api('POST', '/v1/admin/invites', body);
      const out = $('#invite-link');
      out.replaceChildren(el('strong', { text: `Invite link (shown once, valid until ${when(r.expiresAt)}): ` }),
        el('code', { text: `${location.origin}/console/signup#invite=${enc(r.token)}` }));
      out.hidden = false;
    });

    (async () => {
      const chain = $('#audit-chain');
      try {
        const v = await api('GET', '/v1/audits/verify');
        chain.textContent = v.intact
          ? `Hash chain verified: intact, ${v.entries} entries.`
          : `Hash chain BROKEN at entry ${v.brokenAt}: ${v.reason}`;
        chain.className = v.intact ? 'ok' : 'problem';
      } catch (e) {
        chain.textContent = `Chain not verified: ${e}`;
        chain.className = 'problem';
      }
      try {
        const entries = await auditEntries();
        auditRows($('#audit-table tbody'), entries.reverse().slice(0, 200), true);
      } catch (e) { showProblem($('#audit-table').parentElement.parentElement, e); }
    })();
  };

  document.addEventListener('DOMContentLoaded', () => {
    $$('.meter[data-meter-for]').forEach(bindMeter);
    const logout = $('#logout');
    if (logout) {
      logout.addEventListener('click', async () => {
        try {
          await api('DELETE', '/v1/sessions/current');
        } catch (e) { /* already signed out */ }
        location.assign('/console/login');
      });
    }
    const page = pages[document.body.dataset.page];
    if (page) page();
  });
})();
